# The data: each set (the training source, `dataset`, and every external set under its own name)
# fetched into the Kaggle layout, listed in a manifest with its rejects, and preprocessed once
# per preprocessing a run needs; then the training source's partition into the locked test
# split and the folds.


# Kaggle credentials travel to the download job (on a cluster too). Declared only when set:
# Snakemake refuses to start if a declared variable is missing, and anonymous downloads work.
envvars:
    *[
        name
        for name in (
            "KAGGLE_USERNAME",
            "KAGGLE_KEY",
            "KAGGLE_API_TOKEN",
            "KAGGLE_CONFIG_DIR",
        )
        if name in os.environ
    ],


rule fetch_data:
    input:
        local=data_files,
        code=code("fetch_data"),
    output:
        receipt=f"{DATA}/source.json",
    log:
        f"{LOGS}/fetch_data/{{set}}.log",
    benchmark:
        f"{BENCH}/fetch_data/{{set}}.tsv"
    conda:
        ENV
    params:
        dataset=lambda wildcards: dataset_spec(config, wildcards.set),
        work_dir=DATA,
        content=data_content,  # only to rerun when an image's content changes
    script:
        "../scripts/fetch_data.py"


rule build_manifest:
    input:
        receipt=rules.fetch_data.output.receipt,
        code=code("build_manifest"),
    output:
        manifest=f"{DATA}/manifest.tsv",
        rejects=f"{DATA}/rejects.tsv",
    log:
        f"{LOGS}/build_manifest/{{set}}.log",
    benchmark:
        f"{BENCH}/build_manifest/{{set}}.tsv"
    conda:
        ENV
    params:
        setting=lambda wildcards: dataset_spec(config, wildcards.set).get(
            "setting", "dataset.path"
        ),
    script:
        "../scripts/build_manifest.py"


rule preprocess:
    input:
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        code=code("preprocess"),
    output:
        cache=f"{DATA}/{IMAGES}",
    log:
        f"{LOGS}/preprocess/{{set}}_{{size}}px_{{mask}}_{{intensity}}.log",
    benchmark:
        f"{BENCH}/preprocess/{{set}}_{{size}}px_{{mask}}_{{intensity}}.tsv"
    conda:
        ENV
    params:
        image_size=lambda wildcards: int(wildcards.size),
        mask=lambda wildcards: wildcards.mask,
        intensity=lambda wildcards: wildcards.intensity,
    script:
        "../scripts/preprocess.py"


# Near-duplicate groups, the locked test split and the folds of every training source; every
# run's inner validation split is checked here too, so a part without a class stops the run
# before any training. With an adaptation site, its split into the adaptation pool and the
# evaluation part too.
rule partition:
    input:
        manifests=[f"{RESULTS}/data/{name}/manifest.tsv" for name in PARTITION_SETS],
        caches=base_caches(),
        code=code("partition"),
    output:
        partition=PARTITION,
        summary=f"{RESULTS}/data/partition.json",
        site=SITE_SPLIT,
    log:
        f"{LOGS}/partition.log",
    benchmark:
        f"{BENCH}/partition.tsv"
    conda:
        ENV
    params:
        split=config["split"],
        folds=config["evaluation"]["folds"],
        run_folds=PLAN.run_folds(),
        sets=PARTITION_SETS,
        sources=SOURCE_PARAMS,
        site=PLAN.site,
        # only what shapes the site's split: other adaptation settings keep the partition
        adaptation={k: config["adaptation"][k] for k in ("pool", "train_on_pool")},
    script:
        "../scripts/partition.py"
