rule report:
    input:
        unpack(ablation_outputs),
        unpack(cv_outputs),
        unpack(external_outputs),
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        rejects=rules.build_manifest.output.rejects,
        split=rules.split_manifest.output.split,
        baselines=rules.baselines.output.baselines,
        shortcut_meter=FINAL_SHORTCUT_METER,
        summary=rules.aggregate_sweep.output.summary,
        best=rules.aggregate_sweep.output.best,
        grid=rules.aggregate_sweep.output.figure,
        curves=rules.train_final.output.curves,
        train_metrics=rules.train_final.output.metrics,
        metrics=rules.evaluate.output.metrics,
        confusion=rules.evaluate.output.confusion,
        roc=rules.evaluate.output.roc,
        patch_grid=rules.attention_maps.output.patch_grid,
        heads=rules.attention_maps.output.heads,
        rollout=rules.attention_maps.output.rollout,
        code=package_files("report", "summary"),
    output:
        html=f"{RESULTS}/report.html",
        summary=f"{RESULTS}/summary.md",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        ENV
    params:
        # predict.inputs only concerns the predict rule: changing it must not redo the report
        config={key: value for key, value in config.items() if key != "predict"},
        benchmarks=BENCH,
    script:
        "../scripts/report.py"
