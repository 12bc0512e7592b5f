# Classify new scans with the shipped model: `snakemake results/predictions/NAME.csv` for a folder
# configured as predict.inputs.NAME. Not part of `all`: it runs only when asked for.


rule predict:
    input:
        folder=predict_folder,
        model=SHIPPED_MODEL,
        code=code("predict"),
    output:
        predictions=f"{RESULTS}/predictions/{{name}}.csv",
    log:
        f"{LOGS}/predict/{{name}}.log",
    benchmark:
        f"{BENCH}/predict/{{name}}.tsv"
    wildcard_constraints:
        name=r"[^/]+",
    conda:
        ENV
    threads: config["final"]["threads"]
    script:
        "../scripts/predict.py"
