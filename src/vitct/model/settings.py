"""The settings of one model, as a dataclass (no torch import, so the Snakefile can check a
config quickly). Their defaults are the schema's (workflow/schemas/config.schema.yaml); a test
holds the two together."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Self


class Settings:
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
class ViTConfig(Settings):
    image_size: int = 128
    in_channels: int = 1
    num_classes: int = 2
    patch_size: int = 16
    embed_dim: int = 64
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.3
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    tokenizer: str = "conv"  # "patch": one strided conv; "conv": conv-relu-pool stem (CCT)
    pooling: str = "seq"  # "cls": class token; "mean": average of tokens; "seq": attention pool

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
