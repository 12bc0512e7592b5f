# The ablation: the final training again with one ingredient changed per variant, scored on
# the same test images. Reuses the final model's training and evaluation rules unchanged, and
# its pretraining too when a variant leaves that as it is (say, no label smoothing).


use rule pretrain_final as pretrain_ablation with:
    input:
        cache=variant_images,
        split=rules.split_manifest.output.split,
        best=rules.aggregate_sweep.output.best,
        code=TRAINING_CODE,
    output:
        pretrained=f"{RESULTS}/ablation/{{variant}}/pretrained.pt",
    log:
        f"{LOGS}/ablation/pretrain_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablation/pretrain_{{variant}}.tsv"
    params:
        settings=lambda wildcards: pretraining_settings(
            config, ablation_overrides(wildcards)
        ),


use rule train_final as train_ablation with:
    input:
        cache=variant_images,
        split=rules.split_manifest.output.split,
        best=rules.aggregate_sweep.output.best,
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        pretrained=variant_pretraining,
        code=rules.train_final.input.code,
    output:
        model=f"{RESULTS}/ablation/{{variant}}/model.safetensors",
        model_config=f"{RESULTS}/ablation/{{variant}}/model_config.json",
        metrics=f"{RESULTS}/ablation/{{variant}}/train_metrics.json",
        history=f"{RESULTS}/ablation/{{variant}}/history.tsv",
        curves=f"{RESULTS}/ablation/{{variant}}/curves.png",
    log:
        f"{LOGS}/ablation/train_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablation/train_{{variant}}.tsv"
    params:
        tuned=True,
        base=rules.train_final.params.base,
        overrides=ablation_overrides,


use rule evaluate as evaluate_ablation with:
    input:
        model=rules.train_ablation.output.model,
        cache=variant_images,
        split=rules.split_manifest.output.split,
        code=rules.evaluate.input.code,
    output:
        metrics=f"{RESULTS}/ablation/{{variant}}/metrics.json",
        predictions=f"{RESULTS}/ablation/{{variant}}/predictions.csv",
        confusion=f"{RESULTS}/ablation/{{variant}}/confusion_matrix.png",
        roc=f"{RESULTS}/ablation/{{variant}}/roc.png",
    log:
        f"{LOGS}/ablation/evaluate_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablation/evaluate_{{variant}}.tsv"
    params:
        bootstrap=0,  # the ablation table gives paired intervals against the final model
        threshold=config["split"]["near_duplicate_threshold"],


rule ablation_table:
    input:
        final_metrics=rules.evaluate.output.metrics,
        final_train=rules.train_final.output.metrics,
        metrics=expand(f"{RESULTS}/ablation/{{variant}}/metrics.json", variant=VARIANTS),
        train=expand(
            f"{RESULTS}/ablation/{{variant}}/train_metrics.json", variant=VARIANTS
        ),
        code=package_files("ablation", "metrics", "figures"),
    output:
        table=report(
            f"{RESULTS}/ablation/ablation.tsv",
            caption="../report/ablation.rst",
            category="Ablation",
        ),
        figure=report(
            f"{RESULTS}/ablation/ablation.png",
            caption="../report/ablation.rst",
            category="Ablation",
        ),
    log:
        f"{LOGS}/ablation_table.log",
    benchmark:
        f"{BENCH}/ablation_table.tsv"
    conda:
        ENV
    params:
        variants=VARIANTS,
        bootstrap=config["evaluation"]["bootstrap"],
    script:
        "../scripts/ablation_table.py"
