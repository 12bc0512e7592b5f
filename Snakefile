# vitct: a from-scratch Vision Transformer for COVID-19 lung CT slices, end to end.
#   snakemake --cores 4                                  real data (Kaggle), full grid
#   snakemake --cores 4 --configfile config/demo.yaml    built-in synthetic demo data


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/final.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/report.html",
    default_target: True
