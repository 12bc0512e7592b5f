# Before the first job: what will run, a rough time for this machine, and a warning when a
# configuration sized for a GPU is about to train on a CPU alone (vitct.pipeline.startup).
from collections import Counter

from snakemake.logging import logger

from vitct.pipeline.startup import run_images, start_up_message, training_jobs


def trains_on_cuda():
    device = config["training"]["device"]
    if device == "cpu":
        return False
    import torch

    return device == "cuda" or torch.cuda.is_available()


onstart:
    jobs = list(workflow.dag.needrun_jobs())
    work = []
    for job in jobs:
        if job.rule.name in ("train", "pretrain"):
            run = run_of(job.wildcards)
            pretrains = job.rule.name == "pretrain" or not job.input.get(
                "pretrained"
            )
            images = run_images(config, run.fold)
            work += training_jobs(
                job.rule.name, *PLAN.settings(run), images, pretrains
            )
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
