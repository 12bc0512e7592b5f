# Kaggle credentials travel to the download job (on a cluster too). Declared only when set:
# Snakemake refuses to start if a declared variable is missing, and anonymous downloads work.
envvars:
    *defined_envvars("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"),


rule fetch_data:
    input:
        local=local_source(),
    output:
        receipt=f"{RESULTS}/data/source.json",
    params:
        dataset=config["dataset"],
        work_dir=f"{RESULTS}/data/{config['dataset']['source']}",
    log:
        f"{LOGS}/fetch_data.log",
    conda:
        ENV
    script:
        "../scripts/fetch_data.py"


rule build_manifest:
    input:
        receipt=rules.fetch_data.output.receipt,
    output:
        manifest=f"{RESULTS}/data/manifest.tsv",
        rejects=f"{RESULTS}/data/rejects.tsv",
    log:
        f"{LOGS}/build_manifest.log",
    benchmark:
        f"{BENCH}/build_manifest.tsv"
    conda:
        ENV
    script:
        "../scripts/build_manifest.py"


rule split_manifest:
    input:
        manifest=rules.build_manifest.output.manifest,
    output:
        split=f"{RESULTS}/data/split.tsv",
    params:
        split=config["split"],
    log:
        f"{LOGS}/split_manifest.log",
    conda:
        ENV
    script:
        "../scripts/split_manifest.py"


rule preprocess:
    input:
        receipt=rules.fetch_data.output.receipt,
        split=rules.split_manifest.output.split,
        code=package_files("data"),
    output:
        cache=f"{RESULTS}/data/images.npz",
    params:
        image_size=config["preprocess"]["image_size"],
    log:
        f"{LOGS}/preprocess.log",
    benchmark:
        f"{BENCH}/preprocess.tsv"
    conda:
        ENV
    script:
        "../scripts/preprocess.py"
