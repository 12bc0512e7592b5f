# External evaluation (evaluation.external): labelled sets from other sources, never trained
# on. Each goes through the in-source data steps (the same scripts: fetch, manifest with its
# rejects, preprocessing, grey levels), then the final model, each ablation variant and both
# baselines are scored on it. Separate jobs: a bad external set never costs in-source results.
use rule fetch_data as fetch_external with:
    input:
        local=external_files,
    output:
        receipt=f"{EXTERNAL_DIR}/source.json",
    log:
        f"{LOGS}/external/fetch_{{ext}}.log",
    benchmark:
        f"{BENCH}/external/fetch_{{ext}}.tsv"
    params:
        dataset=external_dataset,
        work_dir=EXTERNAL_DIR,
        braced_files={},


use rule build_manifest as external_manifest with:
    input:
        receipt=rules.fetch_external.output.receipt,
    output:
        manifest=f"{EXTERNAL_DIR}/manifest.tsv",
        rejects=f"{EXTERNAL_DIR}/rejects.tsv",
    log:
        f"{LOGS}/external/manifest_{{ext}}.log",
    benchmark:
        f"{BENCH}/external/manifest_{{ext}}.tsv"
    params:
        setting=lambda wildcards: f"evaluation.external.{wildcards.ext}",


use rule preprocess as external_preprocess with:
    input:
        receipt=rules.fetch_external.output.receipt,
        manifest=rules.external_manifest.output.manifest,
        code=rules.preprocess.input.code,
    output:
        cache=f"{EXTERNAL_DIR}/{IMAGE_FILE}",
    log:
        f"{LOGS}/external/preprocess_{{ext}}_{{size}}px_{{mask}}_{{intensity}}.log",
    benchmark:
        f"{BENCH}/external/preprocess_{{ext}}_{{size}}px_{{mask}}_{{intensity}}.tsv"


use rule grey_histograms as external_grey_histograms with:
    input:
        receipt=rules.fetch_external.output.receipt,
        manifest=rules.external_manifest.output.manifest,
        code=rules.grey_histograms.input.code,
    output:
        histograms=f"{EXTERNAL_DIR}/grey_histograms.npz",
    log:
        f"{LOGS}/external/grey_histograms_{{ext}}.log",
    benchmark:
        f"{BENCH}/external/grey_histograms_{{ext}}.tsv"


rule evaluate_external:
    input:
        model=rules.train_final.output.model,
        cache=f"{EXTERNAL_DIR}/{Path(FINAL_IMAGES).name}",
        histograms=rules.external_grey_histograms.output.histograms,
        manifest=rules.external_manifest.output.manifest,
        rejects=rules.external_manifest.output.rejects,
        source_cache=FINAL_IMAGES,
        source_histograms=rules.grey_histograms.output.histograms,
        split=rules.split_manifest.output.split,
        variant_models=variant_models,
        variant_caches=variant_external_images,
        code=package_files(
            "external",
            "inference",
            "familiarity",
            "metrics",
            "neighbours",
            "intensity",
            "figures",
        ),
    output:
        metrics=f"{EXTERNAL_DIR}/metrics.json",
        predictions=f"{EXTERNAL_DIR}/predictions.csv",
        variants=f"{EXTERNAL_DIR}/variants.tsv",
        reliability=report(
            f"{EXTERNAL_DIR}/reliability.png",
            caption="../report/reliability.rst",
            category="External sets",
        ),
    log:
        f"{LOGS}/external/evaluate_{{ext}}.log",
    benchmark:
        f"{BENCH}/external/evaluate_{{ext}}.tsv"
    conda:
        ENV
    threads: config["final"]["threads"]
    params:
        name=lambda wildcards: wildcards.ext,
        path=external_path,
        variants=list(VARIANTS),
        bootstrap=config["evaluation"]["bootstrap"],
        threshold=config["split"]["near_duplicate_threshold"],
        seed=config["split"]["seed"],
    script:
        "../scripts/evaluate_external.py"
