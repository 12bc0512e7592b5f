# Kaggle credentials travel to the download job (on a cluster too). Declared only when set:
# Snakemake refuses to start if a declared variable is missing, and anonymous downloads work.
envvars:
    *defined_envvars(
        "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"
    ),


rule fetch_data:
    input:
        local=local_source(),
    output:
        receipt=f"{RESULTS}/data/source.json",
    log:
        f"{LOGS}/fetch_data.log",
    benchmark:
        f"{BENCH}/fetch_data.tsv"
    conda:
        ENV
    params:
        dataset=config["dataset"],
        work_dir=f"{RESULTS}/data/{config['dataset']['source']}",
        braced_files=braced_local_files(),  # only to rerun when they change
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


rule preprocess:
    input:
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        code=package_files("data", "model_input", "neighbours", "intensity"),
    output:
        cache=IMAGE_CACHE,
    log:
        f"{LOGS}/preprocess_{{size}}px_{{mask}}_{{intensity}}.log",
    benchmark:
        f"{BENCH}/preprocess_{{size}}px_{{mask}}_{{intensity}}.tsv"
    conda:
        ENV
    params:
        image_size=lambda wildcards: int(wildcards.size),
        mask=lambda wildcards: wildcards.mask,
        intensity=lambda wildcards: wildcards.intensity,
    script:
        "../scripts/preprocess.py"


rule grey_histograms:
    input:
        receipt=rules.fetch_data.output.receipt,
        manifest=rules.build_manifest.output.manifest,
        code=package_files("data", "intensity"),
    output:
        histograms=f"{RESULTS}/data/grey_histograms.npz",
    log:
        f"{LOGS}/grey_histograms.log",
    benchmark:
        f"{BENCH}/grey_histograms.tsv"
    conda:
        ENV
    script:
        "../scripts/grey_histograms.py"


rule split_manifest:
    input:
        manifest=rules.build_manifest.output.manifest,
        cache=SWEEP_IMAGES,
        code=package_files("split", "neighbours"),
    output:
        split=f"{RESULTS}/data/split.tsv",
    log:
        f"{LOGS}/split_manifest.log",
    benchmark:
        f"{BENCH}/split_manifest.tsv"
    conda:
        ENV
    params:
        split=config["split"],
    script:
        "../scripts/split_manifest.py"


rule baselines:
    input:
        cache=SWEEP_IMAGES,
        split=rules.split_manifest.output.split,
        grey_histograms=rules.grey_histograms.output.histograms,
        code=package_files("neighbours", "intensity", "metrics"),
    output:
        baselines=f"{RESULTS}/baseline/baselines.json",
    log:
        f"{LOGS}/baselines.log",
    benchmark:
        f"{BENCH}/baselines.tsv"
    conda:
        ENV
    params:
        threshold=config["split"]["near_duplicate_threshold"],
        strategy=config["split"]["strategy"],
        seed=config["split"]["seed"],
    script:
        "../scripts/baselines.py"


# The shortcut meter: the grey-level baseline refitted on the final model's own input (its
# cache, after all preprocessing) and scored on the test split and every external set's cache
# of the same preprocessing: how much of the label the grey levels of what the ViT sees carry.
# One meter per preprocessing (the report shows the final model's); an ablation variant's is
# a target of its own: results/baseline/shortcut_meter_{size}px_{mask}_{intensity}.json.
rule shortcut_meter:
    input:
        cache=IMAGE_CACHE,
        split=rules.split_manifest.output.split,
        external=expand(
            f"{RESULTS}/external/{{ext}}/{IMAGE_FILE}",
            ext=EXTERNAL,
            allow_missing=True,
        ),
        code=package_files("intensity", "metrics", "external", "neighbours"),
    output:
        meter=SHORTCUT_METER,
    log:
        f"{LOGS}/shortcut_meter_{{size}}px_{{mask}}_{{intensity}}.log",
    benchmark:
        f"{BENCH}/shortcut_meter_{{size}}px_{{mask}}_{{intensity}}.tsv"
    conda:
        ENV
    params:
        external=list(EXTERNAL),
        threshold=config["split"]["near_duplicate_threshold"],
        seed=config["split"]["seed"],
        bootstrap=config["evaluation"]["bootstrap"],
    script:
        "../scripts/shortcut_meter.py"


# Grouped, stratified folds over the images outside the test split (cross-validation).
rule assign_folds:
    input:
        split=rules.split_manifest.output.split,
        code=package_files("folds"),
    output:
        folds=f"{RESULTS}/cv/folds.tsv",
    log:
        f"{LOGS}/assign_folds.log",
    benchmark:
        f"{BENCH}/assign_folds.tsv"
    conda:
        ENV
    params:
        folds=config["evaluation"]["folds"],
        seed=config["split"]["seed"],
    script:
        "../scripts/assign_folds.py"
