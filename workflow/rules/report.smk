# What the runs say: every table and figure is a summary of the runs' predictions (and of the
# grid runs' inner-validation metrics), made by one module (vitct.evaluation.summaries); then
# the shipped model's attention maps, the report, and the shipped model file.


rule summarise:
    input:
        predictions=run_file(PLAN.scored_runs(), "predictions.tsv"),
        metrics=run_file(PLAN.runs(), "train_metrics.json"),
        baselines=rules.baselines.output.predictions,
        partition=rules.partition.output.summary,
        code=code("summarise"),
    output:
        **SUMMARY_FIGURES,
        headline=f"{SUMMARY}/headline.json",
        runs=f"{SUMMARY}/runs.tsv",
        folds=f"{SUMMARY}/folds.tsv",
        sweep=report(
            f"{SUMMARY}/sweep.tsv",
            caption="../report/sweep_summary.rst",
            category="Sweep",
        ),
        ablation=f"{SUMMARY}/ablation.tsv",
        loso=f"{SUMMARY}/leave_one_source_out.tsv",
        curve=f"{SUMMARY}/learning_curve.tsv",
    log:
        f"{LOGS}/summarise.log",
    benchmark:
        f"{BENCH}/summarise.tsv"
    conda:
        ENV
    params:
        plan=lambda wildcards: {
            "shipped": SHIPPED,
            "folds": PLAN.cv_folds,
            "seeds": PLAN.seeds,
            "nested": PLAN.nested,
            "variants": PLAN.variants,
            "grid": list(config["sweep"]["grid"]),
            "grid_recipes": list(PLAN.grid),
            "sources": list(PLAN.sources),
            "site": PLAN.site,
            "external": list(PLAN.external),
            "metric": config["training"]["selection_metric"],
            "strategy": config["split"]["strategy"],
            "threshold": config["split"]["near_duplicate_threshold"],
            "cross_validate": bool(
                config["ablation"]["cross_validate"] and PLAN.cv_folds
            ),
        },
        bootstrap=config["evaluation"]["bootstrap"],
    script:
        "../scripts/summarise.py"


rule attention_maps:
    input:
        model=f"{SHIPPED}/model.safetensors",
        predictions=f"{SHIPPED}/predictions.tsv",
        cache=training_caches("final"),
        partition=PARTITION,
        code=code("attention_maps"),
    output:
        patch_grid=report(
            f"{RESULTS}/attention/patch_grid.png",
            caption="../report/patch_grid.rst",
            category="Attention",
        ),
        heads=report(
            expand(
                f"{RESULTS}/attention/heads_{{k}}.png",
                k=range(1, config["evaluation"]["attention_images"] + 1),
            ),
            caption="../report/attention_heads.rst",
            category="Attention",
        ),
        rollout=report(
            f"{RESULTS}/attention/rollout.png",
            caption="../report/rollout.rst",
            category="Attention",
        ),
    log:
        f"{LOGS}/attention_maps.log",
    benchmark:
        f"{BENCH}/attention_maps.tsv"
    conda:
        ENV
    threads: FINAL_THREADS
    params:
        n_images=config["evaluation"]["attention_images"],
        prefixes=SOURCE_PARAMS["prefixes"],
    script:
        "../scripts/attention_maps.py"


rule report:
    input:
        **{name: rules.summarise.output[name] for name in SUMMARY_FIGURES},
        summary=rules.summarise.output.headline,
        runs=rules.summarise.output.runs,
        folds=rules.summarise.output.folds,
        sweep=rules.summarise.output.sweep,
        ablation=rules.summarise.output.ablation,
        loso=rules.summarise.output.loso,
        curve=rules.summarise.output.curve,
        partition=rules.partition.output.summary,
        receipt=f"{RESULTS}/data/{DATASET}/source.json",
        receipts=[f"{RESULTS}/data/{s}/source.json" for s in SOURCES.values()],
        manifest=f"{RESULTS}/data/{DATASET}/manifest.tsv",
        rejects=f"{RESULTS}/data/{DATASET}/rejects.tsv",
        shipped=f"{SHIPPED}/train_metrics.json",
        curves=f"{SHIPPED}/curves.png",
        attention=rules.attention_maps.output,
        code=code("report"),
    output:
        html=f"{RESULTS}/report.html",
        summary=f"{RESULTS}/summary.md",
        card=f"{RESULTS}/model_card.md",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        ENV
    params:
        # predict.inputs only concerns the predict rule, tracking the track rule: changing
        # them must not redo the report
        config={
            key: value
            for key, value in config.items()
            if key not in ("predict", "tracking")
        },
        benchmarks=BENCH,
        shipped_model=SHIPPED_MODEL,
        sources=list(SOURCES),
    script:
        "../scripts/report.py"


# The model users get, at a path that does not change with the config.
rule ship_model:
    input:
        model=f"{SHIPPED}/model.safetensors",
        code=code("ship_model"),
    output:
        model=SHIPPED_MODEL,
    log:
        f"{LOGS}/ship_model.log",
    benchmark:
        f"{BENCH}/ship_model.tsv"
    conda:
        ENV
    script:
        "../scripts/ship_model.py"
