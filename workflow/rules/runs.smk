# The runs: (recipe, fold, seed) under results/runs/RECIPE/FOLD/seedSEED. vitct.pipeline.plan
# says which runs a config asks for; these rules make any of them. A run trains on its fold's
# training images and picks its epoch and flag threshold on its own inner validation split;
# only the score rule reads a held-out fold, the locked test and external sets.


# Masked-image pretraining shared by the runs it fits (the final recipe and the variants that
# leave it as it is, on the same fold and seed); on the run's own training images, unlabelled.
rule pretrain:
    input:
        cache=run_cache,
        partition=PARTITION,
        choice=choice_metrics,
        code=code("pretrain"),
    output:
        pretrained=f"{RUN}/pretrained.pt",
    log:
        f"{LOGS}/runs/{{recipe}}/{{fold}}/seed{{seed}}/pretrain.log",
    benchmark:
        f"{BENCH}/pretrain/{{recipe}}/{{fold}}/seed{{seed}}.tsv"
    conda:
        ENV
    threads: FINAL_THREADS
    resources:
        mem_mb=config["final"]["mem_mb"],
        runtime=config["final"]["runtime"],
        # One share of a GPU: `--resources gpu_slots=N` (profiles/gpu) runs N at once.
        gpu_slots=1,
    params:
        run=pretrain_params,
        split=SPLIT,
        prefixes=SOURCE_PARAMS["prefixes"],
    script:
        "../scripts/pretrain.py"


rule train:
    input:
        cache=run_cache,
        partition=PARTITION,
        receipt=f"{RESULTS}/data/{DATASET}/source.json",
        manifest=f"{RESULTS}/data/{DATASET}/manifest.tsv",
        choice=choice_metrics,
        pretrained=pretraining,
        code=code("train"),
    output:
        model=f"{RUN}/model.safetensors",
        metrics=f"{RUN}/train_metrics.json",
        history=f"{RUN}/history.tsv",
        curves=f"{RUN}/curves.png",
    log:
        f"{LOGS}/runs/{{recipe}}/{{fold}}/seed{{seed}}/train.log",
    benchmark:
        f"{BENCH}/train/{{recipe}}/{{fold}}/seed{{seed}}.tsv"
    wildcard_constraints:
        recipe=r"(?!adapt~)[A-Za-z0-9_~.+-]+",  # adapt~...: the adapt rule's
        fold=r"all|fold\d+|lo_[A-Za-z0-9_-]+",
    conda:
        ENV
    threads: run_threads
    resources:
        mem_mb=run_resource("mem_mb"),
        runtime=run_resource("runtime"),
        # One share of a GPU: `--resources gpu_slots=N` (profiles/gpu) runs N at once.
        gpu_slots=1,
    params:
        run=run_params,
        split=SPLIT,
        prefixes=SOURCE_PARAMS["prefixes"],
    script:
        "../scripts/train.py"


# One point of the learning curve: the shipped model adapted to the site with n slices drawn
# from its adaptation pool (adaptation.method), under results/runs/adapt~METHOD~nN/drawD/.
rule adapt:
    input:
        model=f"{SHIPPED}/model.safetensors",
        shipped=f"{SHIPPED}/train_metrics.json",
        site_split=SITE_SPLIT,
        site_cache=lambda wildcards: cache_of("final", PLAN.site),
        partition=PARTITION,
        caches=training_caches("final"),
        code=code("adapt"),
    output:
        model=f"{RUN}/model.safetensors",
        metrics=f"{RUN}/train_metrics.json",
        history=f"{RUN}/history.tsv",
    log:
        f"{LOGS}/runs/{{recipe}}/{{fold}}/seed{{seed}}/adapt.log",
    benchmark:
        f"{BENCH}/adapt/{{recipe}}/{{fold}}/seed{{seed}}.tsv"
    wildcard_constraints:
        recipe=r"adapt~[a-z]+~n(\d+|all)",
        fold=r"draw\d+",
    conda:
        ENV
    threads: FINAL_THREADS
    resources:
        mem_mb=config["final"]["mem_mb"],
        runtime=config["final"]["runtime"],
        gpu_slots=1,
    params:
        run=adaptation_params,
        recipe=lambda wildcards: wildcards.recipe,
        fold=lambda wildcards: wildcards.fold,
        seed=lambda wildcards: int(wildcards.seed),
        site=PLAN.site,
        adaptation=config["adaptation"],
        split=SPLIT,
        prefixes=SOURCE_PARAMS["prefixes"],
    script:
        "../scripts/adapt.py"


# The only step that reads the labels of a held-out fold, the locked test or an external set.
rule score:
    input:
        model=f"{RUN}/model.safetensors",
        cache=run_cache,
        partition=PARTITION,
        external=external_caches,
        site=SITE_SPLIT,
        code=code("score"),
    output:
        predictions=f"{RUN}/predictions.tsv",
    log:
        f"{LOGS}/runs/{{recipe}}/{{fold}}/seed{{seed}}/score.log",
    benchmark:
        f"{BENCH}/score/{{recipe}}/{{fold}}/seed{{seed}}.tsv"
    conda:
        ENV
    threads: FINAL_THREADS
    params:
        fold=lambda wildcards: wildcards.fold,
        external=list(PLAN.external),
        split=SPLIT,
        prefixes=SOURCE_PARAMS["prefixes"],
        site=PLAN.site,
    script:
        "../scripts/score.py"


# The baselines the ViT must beat, fitted on every fold's training images as the runs are and
# scored on the same parts: 1-NN on 32x32 pixels (memorisation), gradient boosting on each
# slice's grey-level histogram (no shape), and the shortcut meter (that classifier refitted on
# the final recipe's own input).
rule baselines:
    input:
        cache=training_caches("final"),
        partition=PARTITION,
        external=[cache_of("final", name) for name in PLAN.external],
        site=SITE_SPLIT,
        code=code("baselines"),
    output:
        predictions=expand(
            f"{RESULTS}/baselines/{{fold}}/predictions.tsv", fold=PLAN.run_folds()
        ),
    log:
        f"{LOGS}/baselines.log",
    benchmark:
        f"{BENCH}/baselines.tsv"
    conda:
        ENV
    threads: FINAL_THREADS
    params:
        folds=PLAN.run_folds(),
        external=list(PLAN.external),
        split=SPLIT,
        prefixes=SOURCE_PARAMS["prefixes"],
        site=PLAN.site,
    script:
        "../scripts/baselines.py"
