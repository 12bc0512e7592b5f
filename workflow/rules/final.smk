rule pretrain_final:
    input:
        cache=FINAL_IMAGES,
        split=rules.split_manifest.output.split,
        best=rules.aggregate_sweep.output.best,
        code=TRAINING_CODE,
    output:
        pretrained=f"{RESULTS}/final/pretrained.pt",
    log:
        f"{LOGS}/pretrain_final.log",
    benchmark:
        f"{BENCH}/pretrain_final.tsv"
    conda:
        ENV
    threads: config["final"]["threads"]
    resources:
        mem_mb=config["final"]["mem_mb"],
        runtime=config["final"]["runtime"],
        # One share of a GPU: `--resources gpu_slots=N` (profiles/gpu) runs N at once.
        gpu_slots=1,
    params:
        # Only what shapes pretraining, so that changing another setting keeps it.
        settings=pretraining_settings(config, config["final"]["overrides"]),
    script:
        "../scripts/pretrain.py"


rule train_final:
    input:
        cache=FINAL_IMAGES,
        split=rules.split_manifest.output.split,
        best=rules.aggregate_sweep.output.best,
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        pretrained=final_pretraining,
        code=TRAINING_CODE + package_files("artifact"),
    output:
        model=f"{RESULTS}/final/model.safetensors",
        model_config=f"{RESULTS}/final/model_config.json",
        metrics=f"{RESULTS}/final/train_metrics.json",
        history=f"{RESULTS}/final/history.tsv",
        curves=report(
            f"{RESULTS}/final/curves.png",
            caption="../report/final_curves.rst",
            category="Final model",
        ),
    log:
        f"{LOGS}/train_final.log",
    benchmark:
        f"{BENCH}/train_final.tsv"
    conda:
        ENV
    threads: config["final"]["threads"]
    resources:
        mem_mb=config["final"]["mem_mb"],
        runtime=config["final"]["runtime"],
        # One share of a GPU: `--resources gpu_slots=N` (profiles/gpu) runs N at once.
        gpu_slots=1,
    params:
        tuned=True,  # the best combination's settings with these overrides
        base={key: config[key] for key in ("model", "training", "preprocess")},
        overrides=config["final"]["overrides"],
    script:
        "../scripts/train.py"


rule evaluate:
    input:
        model=rules.train_final.output.model,
        cache=FINAL_IMAGES,
        split=rules.split_manifest.output.split,
        code=package_files(
            "inference", "familiarity", "metrics", "neighbours", "figures", "artifact"
        ),
    output:
        metrics=f"{RESULTS}/final/metrics.json",
        predictions=f"{RESULTS}/final/predictions.csv",
        confusion=report(
            f"{RESULTS}/final/confusion_matrix.png",
            caption="../report/confusion.rst",
            category="Final model",
        ),
        roc=report(
            f"{RESULTS}/final/roc.png",
            caption="../report/roc.rst",
            category="Final model",
        ),
    log:
        f"{LOGS}/evaluate.log",
    benchmark:
        f"{BENCH}/evaluate.tsv"
    conda:
        ENV
    threads: config["final"]["threads"]
    params:
        bootstrap=config["evaluation"]["bootstrap"],
        threshold=config["split"]["near_duplicate_threshold"],
    script:
        "../scripts/evaluate.py"


rule attention_maps:
    input:
        model=rules.train_final.output.model,
        cache=FINAL_IMAGES,
        split=rules.split_manifest.output.split,
        predictions=rules.evaluate.output.predictions,
        code=package_files("attention", "figures", "artifact"),
    output:
        patch_grid=report(
            f"{RESULTS}/final/attention/patch_grid.png",
            caption="../report/patch_grid.rst",
            category="Attention",
        ),
        heads=report(
            expand(
                f"{RESULTS}/final/attention/heads_{{k}}.png",
                k=range(1, config["evaluation"]["attention_images"] + 1),
            ),
            caption="../report/attention_heads.rst",
            category="Attention",
        ),
        rollout=report(
            f"{RESULTS}/final/attention/rollout.png",
            caption="../report/rollout.rst",
            category="Attention",
        ),
    log:
        f"{LOGS}/attention_maps.log",
    benchmark:
        f"{BENCH}/attention_maps.tsv"
    conda:
        ENV
    threads: config["final"]["threads"]
    params:
        n_images=config["evaluation"]["attention_images"],
    script:
        "../scripts/attention_maps.py"
