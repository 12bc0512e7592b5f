# Before the first job: what will run, a rough time for this machine, and a warning when a
# configuration sized for a GPU is about to train on a CPU alone (src/vitct/startup.py).
from collections import Counter

from snakemake.logging import logger

from vitct.startup import expected_images, start_up_message, training_jobs


def job_settings(job):
    """(model, training) settings of a training or pretraining job, as its rule builds them."""
    name = job.rule.name
    if name == "train_sweep":
        return sweep_settings(job.wildcards)
    if "ablation" in name:  # the ablation's own runs and its cross-validation runs
        return run_settings(config, ablation_overrides(job.wildcards))
    return run_settings(config, config["final"]["overrides"])


def trains_on_cuda():
    device = config["training"]["device"]
    if device == "cpu":
        return False
    import torch

    return device == "cuda" or torch.cuda.is_available()


onstart:
    jobs = list(workflow.dag.needrun_jobs())
    images = expected_images(config)
    work = []
    for job in jobs:
        name = job.rule.name
        if name.startswith(("train_", "pretrain_")):
            pretrains = name.startswith("pretrain_") or not job.input.get(
                "pretrained"
            )
            work += training_jobs(name, *job_settings(job), images, pretrains)
    summary, warning = start_up_message(
        Counter(job.rule.name for job in jobs),
        work,
        cores=workflow.cores,
        cuda=trains_on_cuda(),
        on_cluster=not workflow.local_exec,
    )
    logger.info(summary)
    if warning:
        logger.warning(f"WARNING: {warning}")
