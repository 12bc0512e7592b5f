# vitct: a from-scratch Vision Transformer for COVID-19 lung CT slices, end to end.
#   snakemake --cores 2 --configfile config/demo.yaml      built-in synthetic demo data
#   snakemake --cores 2 --configfile config/real-cpu.yaml  real data on a CPU
#   snakemake --cores N                                    real data on a GPU or a cluster
#
# The data: fetch, manifest, preprocessed caches, and the partition into a locked test split
# and grouped folds. The runs: one kind, (recipe, fold, seed), each pretrained, trained and
# scored by one rule each under results/runs/RECIPE/FOLD/seedSEED; the grid's runs choose the
# recipe (vitct.pipeline.plan says which runs a config asks for). Then the summaries of every
# run's predictions, the attention maps of the shipped model, and the report.


# The default config. A --configfile given on the command line replaces it instead of being
# merged into it; keys a config leaves out take the schema's defaults, which are this file's
# values (tests/test_config.py holds the two together).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/startup.smk"
include: "workflow/rules/tracking.smk"


# Light steps run in the Snakemake process itself, not as cluster jobs (profiles/slurm).
localrules:
    fetch_data,
    build_manifest,
    partition,
    summarise,
    report,
    ship_model,


rule all:
    default_target: True
    input:
        f"{RESULTS}/report.html",
        SHIPPED_MODEL,
        TRACKED,  # tracking.mlflow: every training run logged to MLflow
