"""Train one run on its fold's training images, picking its epoch (and, for a scored run, its
out-of-distribution threshold and its temperature) on its own inner validation split; a tuned
recipe first takes the grid combination its choice runs' inner-validation metrics chose."""

import json
from pathlib import Path

import pandas as pd
import torch

from vitct.atomic_files import write_text
from vitct.data.cache import load_training_cache
from vitct.data.manifest import sha256_of
from vitct.data.series import input_record
from vitct.evaluation.figures import plot_history
from vitct.model.artifact import save_artifact
from vitct.pipeline import harness
from vitct.pipeline.plan import step_settings
from vitct.training.loop import fingerprint
from vitct.training.pretrain import PretrainingMismatchError
from vitct.training.run import train_run


def main(snakemake):
    params, inputs = snakemake.params.run, snakemake.input
    model_cfg, train_cfg, preprocessing, chosen = step_settings(params, inputs.choice)
    table = pd.read_csv(inputs.partition, sep="\t", keep_default_na=False)
    pretrained, identity = None, [*inputs.cache, inputs.partition]
    if inputs.get("pretrained"):  # the shared pretraining of the pretrain rule
        pretrained = torch.load(inputs.pretrained, weights_only=True)
        identity.append(inputs.pretrained)  # a new pretraining restarts the training
    out = Path(snakemake.output.metrics).parent
    resume = out / "resume.pt"  # not an output: Snakemake keeps it when a job is interrupted
    try:
        run = train_run(
            load_training_cache(inputs.cache, snakemake.params.prefixes),
            table,
            params["fold"],
            snakemake.params.split,
            model_cfg,
            train_cfg,
            reference=params["tuned"],  # a grid run is never scored: it needs none
            pretrained=pretrained,
            resume_path=resume,
            run_id=fingerprint(model_cfg, train_cfg, *identity),
        )
    except PretrainingMismatchError as e:  # say which file (kept by --rerun-triggers mtime)
        raise PretrainingMismatchError(f"{inputs.pretrained}: {e}") from None
    history = run.history.to_csv(sep="\t", index=False, float_format="%.6g")
    write_text(snakemake.output.history, history)
    title = f"{params['recipe']}, {params['fold']}, seed {params['seed']}"
    plot_history(run.history, snakemake.output.curves, title=title)
    validation = {k: v for k, v in run.best.items() if k.startswith("val_")}
    metrics = {
        "recipe": params["recipe"],
        "fold": params["fold"],
        "seed": params["seed"],
        "chosen": chosen,  # the grid combination a tuned recipe builds on, and on what data
        "changes": {**(chosen["params"] if chosen else {}), **params["changes"]},
        "model": model_cfg.to_dict(),
        "training": train_cfg.to_dict(),
        "images": run.images,  # train, and the inner validation split that chose the epoch
        "best_epoch": run.best["epoch"],
        "epochs_run": len(run.history),
        "parameters": run.parameters,
        **validation,
    }
    if run.reference is not None:
        metrics["ood_thresholds"] = run.reference.header()
    if run.calibration is not None:
        metrics["calibration"] = run.calibration.header()
    # Which data made the model: the download's receipt and the exact set of images.
    provenance = json.loads(Path(inputs.receipt).read_text())
    provenance["manifest_sha256"] = sha256_of(Path(inputs.manifest))
    provenance["run"] = {k: params[k] for k in ("recipe", "fold", "seed")}
    metrics["manifest_sha256"] = provenance["manifest_sha256"]
    write_text(snakemake.output.metrics, json.dumps(metrics, indent=2, sort_keys=True))
    save_artifact(
        snakemake.output.model,
        run.model,
        preprocessing={
            "image_size": model_cfg.image_size,
            "grey": "PIL convert('L')",
            # vitct.data.model_input: what of the slice the model sees, and its grey levels
            "mask": preprocessing["mask"],
            "intensity": preprocessing["intensity"],
            # DICOM series or 8-bit slices, and for DICOM the window and the slice rule
            "input": input_record(table["mode"]),
            "mean": run.mean,
            "std": run.std,
        },
        familiarity=run.reference,
        calibration=run.calibration,
        training=train_cfg.to_dict(),
        data=provenance,
        validation=validation,
    )
    resume.unlink(missing_ok=True)


harness.run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
