# Grouped, stratified k-fold cross-validation of the final model's recipe: one training job per
# (fold, seed), so `--cores N` and a cluster profile run them side by side. The locked test
# split stays out of every fold; each run is scored on its held-out fold and on that test.


# Masked-image pretraining sees no labels: one per seed, on every image outside the test split
# (the held-out folds' too, as the final model's pretraining sees its validation images), is
# shared by that seed's folds.
use rule pretrain_final as pretrain_cv with:
    input:
        cache=FINAL_IMAGES,
        split=rules.split_manifest.output.split,
        best=rules.aggregate_sweep.output.best,
        code=TRAINING_CODE,
    output:
        pretrained=f"{RESULTS}/cv/seed{{seed}}/pretrained.pt",
    log:
        f"{LOGS}/cv/pretrain_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/cv/pretrain_seed{{seed}}.tsv"
    params:
        settings=lambda wildcards: pretraining_settings(config, cv_overrides(wildcards)),


use rule train_final as train_cv with:
    input:
        cache=FINAL_IMAGES,
        split=rules.assign_folds.output.folds,
        best=rules.aggregate_sweep.output.best,
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        pretrained=cv_pretraining,
        code=TRAINING_CODE + package_files("artifact", "folds"),
    output:
        model=f"{CV_RUN}/model.safetensors",
        model_config=f"{CV_RUN}/model_config.json",
        metrics=f"{CV_RUN}/train_metrics.json",
        history=f"{CV_RUN}/history.tsv",
        curves=f"{CV_RUN}/curves.png",
    log:
        f"{LOGS}/cv/train_fold{{fold}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/cv/train_fold{{fold}}_seed{{seed}}.tsv"
    params:
        base={key: config[key] for key in ("model", "training", "preprocess")},
        tuned=True,
        overrides=cv_overrides,
        fold=lambda wildcards: int(wildcards.fold),


rule evaluate_cv:
    input:
        model=rules.train_cv.output.model,
        train_metrics=rules.train_cv.output.metrics,
        cache=FINAL_IMAGES,
        folds=rules.assign_folds.output.folds,
        external=cv_external_images,
        code=package_files(
            "metrics",
            "crossval",
            "artifact",
            "familiarity",
            "inference",
            "folds",
            "external",
            "neighbours",
            "intensity",
        ),
    output:
        metrics=f"{CV_RUN}/metrics.json",
        predictions=f"{CV_RUN}/predictions.tsv",
    log:
        f"{LOGS}/cv/evaluate_fold{{fold}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/cv/evaluate_fold{{fold}}_seed{{seed}}.tsv"
    conda:
        ENV
    threads: config["final"]["threads"]
    params:
        fold=lambda wildcards: int(wildcards.fold),
        seed=lambda wildcards: int(wildcards.seed),
        external=list(EXTERNAL),
        threshold=config["split"]["near_duplicate_threshold"],
    script:
        "../scripts/evaluate_cv.py"


rule cv_baselines:
    input:
        cache=SWEEP_IMAGES,
        folds=rules.assign_folds.output.folds,
        grey_histograms=rules.grey_histograms.output.histograms,
        code=package_files("neighbours", "intensity", "metrics", "folds"),
    output:
        baselines=f"{RESULTS}/cv/baselines.json",
    log:
        f"{LOGS}/cv_baselines.log",
    benchmark:
        f"{BENCH}/cv_baselines.tsv"
    conda:
        ENV
    params:
        threshold=config["split"]["near_duplicate_threshold"],
        seed=config["split"]["seed"],
    script:
        "../scripts/cv_baselines.py"


rule cv_summary:
    input:
        metrics=expand(f"{CV_RUN}/metrics.json", zip, **CV_RUNS),
        predictions=expand(f"{CV_RUN}/predictions.tsv", zip, **CV_RUNS),
        baselines=rules.cv_baselines.output.baselines,
        final_metrics=rules.evaluate.output.metrics,
        code=package_files("crossval", "metrics", "figures"),
    output:
        runs=f"{RESULTS}/cv/runs.tsv",
        folds=report(
            f"{RESULTS}/cv/folds_summary.tsv",
            caption="../report/cv.rst",
            category="Cross-validation",
        ),
        headline=f"{RESULTS}/cv/headline.json",
        figure=report(
            f"{RESULTS}/cv/runs.png",
            caption="../report/cv.rst",
            category="Cross-validation",
        ),
    log:
        f"{LOGS}/cv_summary.log",
    benchmark:
        f"{BENCH}/cv_summary.tsv"
    conda:
        ENV
    params:
        bootstrap=config["evaluation"]["bootstrap"],
    script:
        "../scripts/cv_summary.py"


# The ablation over the same folds and seeds: each variant's recipe cross-validated as the
# final one is, so its difference from the final recipe is paired over the repeats.
use rule pretrain_cv as pretrain_ablation_cv with:
    input:
        cache=variant_images,
        split=rules.split_manifest.output.split,
        best=rules.aggregate_sweep.output.best,
        code=TRAINING_CODE,
    output:
        pretrained=f"{RESULTS}/ablation/{{variant}}/cv/seed{{seed}}/pretrained.pt",
    log:
        f"{LOGS}/ablation/cv/pretrain_{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/ablation/cv/pretrain_{{variant}}_seed{{seed}}.tsv"
    params:
        settings=lambda wildcards: pretraining_settings(
            config, variant_cv_overrides(wildcards)
        ),


use rule train_cv as train_ablation_cv with:
    input:
        cache=variant_images,
        split=rules.assign_folds.output.folds,
        best=rules.aggregate_sweep.output.best,
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        pretrained=variant_cv_pretraining,
        code=TRAINING_CODE + package_files("artifact", "folds"),
    output:
        model=f"{ABLATION_CV_RUN}/model.safetensors",
        model_config=f"{ABLATION_CV_RUN}/model_config.json",
        metrics=f"{ABLATION_CV_RUN}/train_metrics.json",
        history=f"{ABLATION_CV_RUN}/history.tsv",
        curves=f"{ABLATION_CV_RUN}/curves.png",
    log:
        f"{LOGS}/ablation/cv/train_{{variant}}_fold{{fold}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/ablation/cv/train_{{variant}}_fold{{fold}}_seed{{seed}}.tsv"
    params:
        base={key: config[key] for key in ("model", "training", "preprocess")},
        tuned=True,
        overrides=variant_cv_overrides,
        fold=lambda wildcards: int(wildcards.fold),


use rule evaluate_cv as evaluate_ablation_cv with:
    input:
        model=rules.train_ablation_cv.output.model,
        train_metrics=rules.train_ablation_cv.output.metrics,
        cache=variant_images,
        folds=rules.assign_folds.output.folds,
        external=variant_cv_external_images,
        code=rules.evaluate_cv.input.code,
    output:
        metrics=f"{ABLATION_CV_RUN}/metrics.json",
        predictions=f"{ABLATION_CV_RUN}/predictions.tsv",
    log:
        f"{LOGS}/ablation/cv/evaluate_{{variant}}_fold{{fold}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/ablation/cv/evaluate_{{variant}}_fold{{fold}}_seed{{seed}}.tsv"


rule cv_ablation_table:
    input:
        final=expand(f"{CV_RUN}/predictions.tsv", zip, **CV_RUNS),
        variants=ABLATION_CV_PREDICTIONS,
        code=package_files("crossval", "metrics"),
    output:
        table=report(
            f"{RESULTS}/ablation/cv_ablation.tsv",
            caption="../report/cv_ablation.rst",
            category="Ablation",
        ),
    log:
        f"{LOGS}/cv_ablation_table.log",
    benchmark:
        f"{BENCH}/cv_ablation_table.tsv"
    conda:
        ENV
    params:
        bootstrap=config["evaluation"]["bootstrap"],
        variants=list(VARIANTS),
    script:
        "../scripts/cv_ablation_table.py"
