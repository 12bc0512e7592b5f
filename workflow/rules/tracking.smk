# Optional run tracking (tracking.mlflow, vitct.pipeline.tracking): every training run logged to
# the local MLflow store in results/mlruns once it is trained, by a job of its own. So turning
# tracking on retrains nothing (the finished runs are logged from their files), editing the
# tracking code relogs without retraining, and with tracking off no job logs or imports mlflow.
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from vitct.pipeline.tracking import (
    TrackingError,
    experiment_name,
    require_mlflow,
    run_kind,
)

TRACKING = f"{RESULTS}/mlruns"
TRACKED = []
if config["tracking"]["mlflow"]:
    # Refuse to start rather than fail after training. Under --sdm conda the jobs run in
    # envs/vitct.yaml, which has the tracking extra; else in Snakemake's own environment.
    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        try:
            require_mlflow()
        except TrackingError as e:
            raise ValueError(f"invalid config: {e}") from None
    TRACKED = [
        f"{TRACKING}/logged/{run.recipe}/{run.fold}/seed{run.seed}.json"
        for run in PLAN.runs()
    ]


rule track:
    input:
        model=f"{RUN}/model.safetensors",
        metrics=f"{RUN}/train_metrics.json",
        history=f"{RUN}/history.tsv",
        code=code("track"),
    output:
        logged=f"{TRACKING}/logged/{{recipe}}/{{fold}}/seed{{seed}}.json",
    log:
        f"{LOGS}/runs/{{recipe}}/{{fold}}/seed{{seed}}/track.log",
    # On the machine running Snakemake (a cluster's login node too): the store is one SQLite
    # file, whose locks network file systems do not always honour.
    localrule: True
    conda:
        ENV
    params:
        # TRACKING, read off the marker's path (TRACKING/logged/RECIPE/FOLD/seedSEED.json)
        store=lambda wildcards, output: str(Path(output.logged).parents[3]),
        experiment=experiment_name(config["dataset"]),
        kind=lambda wildcards: run_kind(PLAN, run_of(wildcards)),
        recipe=lambda wildcards: wildcards.recipe,
        fold=lambda wildcards: wildcards.fold,
        seed=lambda wildcards: int(wildcards.seed),
    script:
        "../scripts/track.py"
