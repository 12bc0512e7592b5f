# vitct: a from-scratch Vision Transformer for COVID-19 lung CT slices, end to end.
#   snakemake --cores 4                                  real data (Kaggle), full grid
#   snakemake --cores 4 --configfile config/demo.yaml    built-in synthetic demo data


# The default config. A --configfile given on the command line replaces it instead of being
# merged into it, so a grid or override in the user's file is exactly what runs (keys it leaves
# out take the schema's defaults, which match this file).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/final.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/cv.smk"
include: "workflow/rules/external.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/startup.smk"


# Light steps run in the Snakemake process itself, not as cluster jobs (profiles/slurm).
localrules:
    fetch_data,
    build_manifest,
    fetch_external,
    external_manifest,
    split_manifest,
    aggregate_sweep,
    ablation_table,
    assign_folds,
    cv_summary,
    cv_ablation_table,
    report,


rule all:
    default_target: True
    input:
        "results/report.html",
