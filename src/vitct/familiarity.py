"""Does an image look like the training data? An out-of-distribution score for `vitct predict`.

A model trained on one hospital's slices still gives a confident-looking probability for a
slice from elsewhere (a figure from a paper, another scanner), where its accuracy is a coin's.
The score says how far an image lies from what the model was trained on, in the model's own
terms: the Mahalanobis distance of its pooled feature vector (`ViT.features`, what the head
reads) to the training images' features, with their class-independent mean and a Ledoit-Wolf
shrunk covariance (a few hundred images cannot pin down a full D x D covariance; shrinkage keeps
its inverse stable). The threshold is the 95th percentile of the validation images' scores, so
about 5% of in-source images are flagged: a flag means "unlike the training source", not
"wrong".

A grey-level statistic (histogram distance) is left out: the features already see intensity,
and one score with one threshold is easier to read than a combination.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METHOD = "mahalanobis, pooled features, Ledoit-Wolf covariance"
QUANTILE = 0.95  # of the validation scores: about 5% of in-source images flagged
TENSOR_PREFIX = "familiarity."  # its tensors in a model file, apart from the model's weights


@dataclass
class Familiarity:
    """The training images' feature distribution and the threshold above which an image is
    called unfamiliar."""

    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D), the inverse of the shrunk covariance
    threshold: float
    val_flagged_share: float
    train_images: int

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each (N, D) feature row to the training mean."""
        diff = np.asarray(features, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", diff, self.precision, diff), 0.0))

    def flags(self, scores: np.ndarray) -> pd.Series:
        """True above the threshold; missing (<NA>) where an image has no score."""
        scores = np.asarray(scores, dtype=float)
        return pd.Series(scores > self.threshold, dtype="boolean").mask(np.isnan(scores))

    def tensors(self) -> dict[str, np.ndarray]:
        return {f"{TENSOR_PREFIX}mean": self.mean, f"{TENSOR_PREFIX}precision": self.precision}

    def header(self) -> dict:
        return {
            "method": METHOD,
            "threshold": self.threshold,
            "val_flagged_share": self.val_flagged_share,
            "train_images": self.train_images,
        }

    @classmethod
    def from_parts(cls, header: dict, tensors: dict[str, np.ndarray]) -> Familiarity:
        """From a model file's `familiarity` header and its familiarity.* tensors."""
        return cls(
            mean=np.asarray(tensors[f"{TENSOR_PREFIX}mean"], dtype=np.float64),
            precision=np.asarray(tensors[f"{TENSOR_PREFIX}precision"], dtype=np.float64),
            threshold=float(header["threshold"]),
            val_flagged_share=float(header["val_flagged_share"]),
            train_images=int(header["train_images"]),
        )


def fit(train_features: np.ndarray, val_features: np.ndarray) -> Familiarity:
    """Reference from the training images' features, threshold from the validation images'."""
    from sklearn.covariance import LedoitWolf  # imported here: predicting never fits

    train = np.asarray(train_features, dtype=np.float64)
    lw = LedoitWolf().fit(train)
    reference = Familiarity(lw.location_, lw.precision_, 0.0, 0.0, len(train))
    val_scores = reference.score(val_features)
    reference.threshold = float(np.quantile(val_scores, QUANTILE))
    reference.val_flagged_share = float((val_scores > reference.threshold).mean())
    return reference


def score_and_flag(reference: Familiarity | None, features: np.ndarray):
    """(ood_score, unfamiliar) columns for scored images: NaN and <NA> without a reference."""
    if reference is None:
        return np.full(len(features), np.nan), pd.Series(pd.NA, range(len(features)), "boolean")
    scores = reference.score(features)
    return scores, reference.flags(scores)


def flagged_share(flags: pd.Series) -> float | None:
    """Share of scored images flagged; None when nothing was scored (no reference)."""
    scored = flags.dropna()
    return float(scored.mean()) if len(scored) else None
