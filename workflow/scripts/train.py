"""Train one model: a sweep combination, or the final model with the best combination."""

import json
from pathlib import Path

import torch

from vitct import step
from vitct.artifact import save_artifact
from vitct.config import tuned_run_settings
from vitct.data import load_splits
from vitct.familiarity import Familiarity
from vitct.familiarity import fit as fit_familiarity
from vitct.figures import plot_history
from vitct.inference import predict_with_features
from vitct.manifest import sha256_of
from vitct.outputs import write_text
from vitct.pretrain import PretrainingMismatchError
from vitct.settings import TrainConfig, ViTConfig
from vitct.train import fingerprint, train


def main(snakemake):
    if snakemake.params.tuned:  # the final model or an ablation variant of it
        changes, model_settings, train_settings = tuned_run_settings(
            snakemake.params.base, snakemake.input.best, snakemake.params.overrides
        )
    else:  # one combination of the sweep's grid
        changes = dict(snakemake.params.swept)
        model_settings, train_settings = snakemake.params.settings
    model_cfg = ViTConfig.from_dict(model_settings)
    train_cfg = TrainConfig.from_dict(train_settings)
    # A cross-validation run holds out its fold of the fold table; others use the split.
    cache = load_splits(snakemake.input.cache, snakemake.input.split, snakemake.params.get("fold"))
    pretrained, inputs = None, [snakemake.input.cache, snakemake.input.split]
    if snakemake.input.get("pretrained"):  # the shared pretraining of the pretrain_* rule
        pretrained = torch.load(snakemake.input.pretrained, weights_only=True)
        inputs.append(snakemake.input.pretrained)  # a new pretraining restarts the training
    out = Path(snakemake.output.metrics).parent
    resume = out / "resume.pt"  # not an output: Snakemake keeps it when a job is interrupted
    try:
        model, history, best_row = train(
            model_cfg,
            train_cfg,
            cache,
            resume_path=resume,
            run_id=fingerprint(model_cfg, train_cfg, *inputs),
            pretrained=pretrained,
        )
    except PretrainingMismatchError as e:  # say which file (kept by --rerun-triggers mtime)
        raise PretrainingMismatchError(f"{snakemake.input.pretrained}: {e}") from None
    write_text(snakemake.output.history, history.to_csv(sep="\t", index=False, float_format="%.6g"))
    plot_history(
        history, snakemake.output.curves, title=", ".join(f"{k}={v}" for k, v in changes.items())
    )
    metrics = {
        "params": changes,
        "fold": snakemake.params.get("fold"),  # None: validated on the split's val images
        "model": model_cfg.to_dict(),
        "training": train_cfg.to_dict(),
        "best_epoch": best_row["epoch"],
        "epochs_run": len(history),
        "parameters": sum(p.numel() for p in model.parameters()),
        **{k: v for k, v in best_row.items() if k.startswith("val_")},
    }
    write_text(snakemake.output.metrics, json.dumps(metrics, indent=2, sort_keys=True))
    write_text(
        snakemake.output.model_config, json.dumps(model_cfg.to_dict(), indent=2, sort_keys=True)
    )
    # Which data made the model: the download's receipt and the exact set of images.
    provenance = json.loads(Path(snakemake.input.receipt).read_text())
    provenance["manifest_sha256"] = sha256_of(Path(snakemake.input.manifest))
    save_artifact(
        snakemake.output.model,
        model,
        preprocessing={
            "image_size": model_cfg.image_size,
            "grey": "PIL convert('L')",
            # vitct.model_input: what of the slice the model sees, and its grey levels
            "mask": model_settings.get("mask", "none"),
            "intensity": model_settings.get("intensity", "raw"),
            "mean": float(cache["mean"]),
            "std": float(cache["std"]),
        },
        familiarity=familiarity_reference(model, cache),
        training=train_cfg.to_dict(),
        data=provenance,
        validation={k: v for k, v in metrics.items() if k.startswith("val_")},
    )
    resume.unlink(missing_ok=True)


def familiarity_reference(model, cache: dict) -> Familiarity:
    """Where the trained model puts the training images (the reference) and the validation
    images (its threshold): `vitct predict` flags images far outside. fp32 (bf16=False), as
    evaluation and predict run."""
    mean, std = float(cache["mean"]), float(cache["std"])
    _, train = predict_with_features(model, cache["train_x"], mean, std, bf16=False)
    _, val = predict_with_features(model, cache["val_x"], mean, std, bf16=False)
    return fit_familiarity(train, val, cache.get("train_grey"), cache.get("val_grey"))


step.run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
