"""The settings of one model and one training run, as dataclasses (no torch import, so the
Snakefile can check a config quickly)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Self


class _Settings:
    """The dict conversion both settings classes share."""

    @classmethod
    def from_dict(cls, values: dict) -> Self:
        """Take the keys that belong to this class and ignore the rest (the model's settings
        and the training's come from one dict)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


class SettingError(ValueError):
    """A rule between settings is broken; `keys` names the settings it ties, the one to blame
    first (config checks name the one the user set)."""

    def __init__(self, message: str, *keys: str):
        super().__init__(message)
        self.keys = keys


@dataclass
class ViTConfig(_Settings):
    image_size: int = 64
    in_channels: int = 1
    num_classes: int = 2
    patch_size: int = 16
    embed_dim: int = 64
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    tokenizer: str = "patch"  # "patch": one strided conv; "conv": conv-relu-pool stem (CCT)
    pooling: str = "cls"  # "cls": class token; "mean": average of tokens; "seq": attention pool

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise SettingError(
                f"patch_size {self.patch_size} does not divide image_size {self.image_size}; "
                "choose values that divide the image size",
                "patch_size",
                "image_size",
            )
        if self.tokenizer == "conv" and self.patch_size & (self.patch_size - 1):
            # Each stage of the conv stem halves the image, so it only reaches power-of-two grids.
            raise SettingError(
                f"patch_size {self.patch_size} is not a power of two, which the conv tokenizer "
                "needs (each of its stages halves the image); choose 2, 4, 8, 16 or 32, or "
                "tokenizer: patch",
                "patch_size",
                "tokenizer",
            )
        if self.embed_dim % self.heads:
            raise SettingError(
                f"heads {self.heads} does not divide embed_dim {self.embed_dim}; choose a number "
                "of heads that divides it",
                "heads",
                "embed_dim",
            )
        if self.tokenizer not in ("patch", "conv"):
            raise SettingError(
                f"tokenizer must be 'patch' or 'conv', not {self.tokenizer!r}", "tokenizer"
            )
        if self.pooling not in ("cls", "mean", "seq"):
            raise SettingError(
                f"pooling must be 'cls', 'mean' or 'seq', not {self.pooling!r}", "pooling"
            )

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class TrainConfig(_Settings):
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    # Decay weight matrices only, not biases, norms, position embeddings or tokens (as nanoGPT
    # and timm do); False decays every parameter.
    selective_weight_decay: bool = True
    warmup_epochs: int = 2
    lr_schedule: str = "cosine"  # after warm-up: "cosine" decay to 0, or "constant"
    label_smoothing: float = 0.0
    grad_clip: float = 1.0
    patience: int = 0  # epochs without improvement before stopping; 0 never stops early
    selection_metric: str = "mcc"  # validation metric that picks the best epoch
    select_best_epoch: bool = True  # False: keep the last epoch's weights
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when present, else CPU
    compile: str = "auto"  # torch.compile: "auto" (vitct.accelerator decides), "always", "never"
    bf16: str = "auto"  # autocast on CUDA: "auto" (vitct.accelerator decides), "always", "never"
    prefetch: bool = True  # build the next batch in a background thread during this step
    augment: bool = True
    hflip: bool = True
    rotate_degrees: float = 10.0
    scale_range: float = 0.1  # random resized crop as a zoom of +-10 %
    translate: float = 0.05
    intensity_jitter: float = 0.1
    # Probability that a training image gets random grey levels, background, resolution, blur,
    # noise and JPEG (vitct.appearance), independent of `augment`; 0 leaves images as they are.
    appearance: float = 0.0
    cutmix: float = 0.0  # share of batches with a box pasted from other images (CutMix)
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
