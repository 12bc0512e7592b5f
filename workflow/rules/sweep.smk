rule train_sweep:
    input:
        cache=SWEEP_IMAGES,
        split=rules.split_manifest.output.split,
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        code=TRAINING_CODE,
    output:
        metrics=f"{RESULTS}/sweep/{paramspace.wildcard_pattern}/metrics.json",
        history=f"{RESULTS}/sweep/{paramspace.wildcard_pattern}/history.tsv",
        curves=report(
            f"{RESULTS}/sweep/{paramspace.wildcard_pattern}/curves.png",
            caption="../report/sweep_curves.rst",
            category="Sweep",
            subcategory="Training curves",
        ),
        model=f"{RESULTS}/sweep/{paramspace.wildcard_pattern}/model.safetensors",
        model_config=f"{RESULTS}/sweep/{paramspace.wildcard_pattern}/model_config.json",
    log:
        f"{LOGS}/sweep/{paramspace.wildcard_pattern}.log",
    benchmark:
        f"{BENCH}/sweep/{paramspace.wildcard_pattern}.tsv"
    conda:
        ENV
    threads: config["sweep"]["threads"]
    resources:
        mem_mb=config["sweep"]["mem_mb"],
        runtime=config["sweep"]["runtime"],
        # One share of a GPU: `--resources gpu_slots=N` (profiles/gpu) runs N at once.
        gpu_slots=1,
    params:
        tuned=False,  # one grid combination's settings, not the best one's
        settings=sweep_settings,
        swept=combination,
    script:
        "../scripts/train.py"


# With sweep.folds > 1 every combination is trained on that many cross-validation folds
# (the first ones of evaluation.folds), and the best is chosen on the mean over them.
use rule train_sweep as train_sweep_fold with:
    input:
        cache=SWEEP_IMAGES,
        split=rules.assign_folds.output.folds,
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        code=TRAINING_CODE + package_files("folds"),
    output:
        metrics=f"{SWEEP_FOLD}/metrics.json",
        history=f"{SWEEP_FOLD}/history.tsv",
        curves=f"{SWEEP_FOLD}/curves.png",
        model=f"{SWEEP_FOLD}/model.safetensors",
        model_config=f"{SWEEP_FOLD}/model_config.json",
    log:
        f"{LOGS}/sweep/fold{{fold}}/{paramspace.wildcard_pattern}.log",
    benchmark:
        f"{BENCH}/sweep/fold{{fold}}/{paramspace.wildcard_pattern}.tsv"
    params:
        tuned=False,
        settings=sweep_settings,
        swept=combination,
        fold=lambda wildcards: int(wildcards.fold),


rule aggregate_sweep:
    input:
        metrics=sweep_metrics,
    output:
        summary=report(
            f"{RESULTS}/sweep/summary.tsv",
            caption="../report/sweep_summary.rst",
            category="Sweep",
        ),
        best=f"{RESULTS}/sweep/best_params.json",
        figure=report(
            f"{RESULTS}/sweep/grid.png",
            caption="../report/sweep_grid.rst",
            category="Sweep",
        ),
    log:
        f"{LOGS}/aggregate_sweep.log",
    benchmark:
        f"{BENCH}/aggregate_sweep.tsv"
    conda:
        ENV
    params:
        grid=GRID,
        metric=config["training"]["selection_metric"],
    script:
        "../scripts/aggregate_sweep.py"
