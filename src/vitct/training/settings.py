"""The settings of one training run, as a dataclass (no torch import, so the Snakefile can
check a config quickly). Their defaults are the schema's (workflow/schemas/config.schema.yaml);
a test holds the two together."""

from __future__ import annotations

from dataclasses import dataclass

from vitct.model.settings import SettingError, Settings, ViTConfig


@dataclass
class TrainConfig(Settings):
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    # Decay weight matrices only, not biases, norms, position embeddings or tokens (as nanoGPT
    # and timm do); False decays every parameter.
    selective_weight_decay: bool = True
    warmup_epochs: int = 2
    lr_schedule: str = "cosine"  # after warm-up: "cosine" decay to 0, or "constant"
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    patience: int = 0  # epochs without improvement before stopping; 0 never stops early
    selection_metric: str = "mcc"  # validation metric that picks the best epoch
    select_best_epoch: bool = True  # False: keep the last epoch's weights
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when present, else CPU
    compile: str = "auto"  # torch.compile: "auto" (vitct.accelerator decides), "always", "never"
    bf16: str = "auto"  # autocast on CUDA: "auto" (vitct.accelerator decides), "always", "never"
    prefetch: bool = True  # build the next batch in a background thread during this step
    augment: bool = False
    hflip: bool = True
    rotate_degrees: float = 10.0
    scale_range: float = 0.1  # random resized crop as a zoom of +-10 %
    translate: float = 0.05
    intensity_jitter: float = 0.1
    # Probability that a training image gets random grey levels, background, resolution, blur,
    # noise and JPEG (vitct.appearance), independent of `augment`; 0 leaves images as they are.
    appearance: float = 0.0
    cutmix: float = 1.0  # share of batches with a box pasted from other images (CutMix)
    cutmix_off_epochs: int = 0  # the last N supervised epochs train on whole scans, unmixed
    pretrain_epochs: int = 0  # masked-image pretraining epochs before the supervised ones
    mask_ratio: float = 0.5  # share of patches hidden in each pretraining image

    def __post_init__(self):
        if not 0.0 <= self.cutmix <= 1.0:
            raise SettingError(
                f"cutmix is a share of batches in [0, 1], not {self.cutmix}", "cutmix"
            )
        if not 0.0 <= self.appearance <= 1.0:
            raise SettingError(
                f"appearance is a probability in [0, 1], not {self.appearance}", "appearance"
            )
        if self.cutmix_off_epochs and not 0 < self.cutmix_off_epochs < self.epochs:
            raise SettingError(
                f"cutmix_off_epochs {self.cutmix_off_epochs} must be at least 0 and fewer than "
                f"epochs ({self.epochs}); to train without CutMix at all, set cutmix: 0",
                "cutmix_off_epochs",
                "epochs",
            )
        if not 0.0 < self.mask_ratio < 1.0:
            raise SettingError(
                f"mask_ratio must be between 0 and 1 (both excluded), not {self.mask_ratio}: "
                "pretraining needs patches to see and patches to redraw",
                "mask_ratio",
            )


# The training settings that shape masked-image pretraining. With every model setting they define
# it: runs that agree on them (say the final model and an ablation variant that only drops label
# smoothing) can share one pretraining (the workflow's pretrain rules).
PRETRAINING_KEYS = (
    "pretrain_epochs",
    "mask_ratio",
    "lr",
    "weight_decay",
    "selective_weight_decay",
    "batch_size",
    "grad_clip",
    "seed",
    "device",
    "hflip",
    "rotate_degrees",
    "scale_range",
    "translate",
    "intensity_jitter",
)


def pretraining_identity(model: ViTConfig, training: TrainConfig) -> dict:
    """What a pretraining was made with; two runs with equal identities pretrain identically."""
    return {"model": model.to_dict(), **{k: getattr(training, k) for k in PRETRAINING_KEYS}}
