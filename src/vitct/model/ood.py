"""Does an image look like the training data? An out-of-distribution score for `vitct predict`.

A model trained on one hospital's slices still gives a confident-looking probability for a
slice from elsewhere (a figure from a paper, another scanner), where its accuracy is a coin's.
Two distances say how far an image lies from what the model was trained on, each a Mahalanobis
distance to the training images with their class-independent mean and a Ledoit-Wolf shrunk
covariance (a few hundred images cannot pin down a full covariance; shrinkage keeps its inverse
stable):
- in the model's own terms: its pooled feature vector (`ViT.features`, what the head reads);
- in the slice's grey levels as decoded, before any mask or standardisation: its 32-band
  histogram at native resolution (vitct.data.histograms). A mask and per-image
  standardisation make slices of every source look alike to the model (on the real data its
  features flag under a tenth of another source's slices), while the source still shows in
  the grey levels it arrived with.
Each distance is divided by its threshold, a quantile of the validation images' distances, and
`ood_score` is the larger of the two: above 1 the image is flagged. The quantiles are chosen so
that about 5% of in-source images are flagged in all: a flag means "unlike the training
source", not "wrong".

A set of images from one place (an external set, a folder given to `vitct predict`) is judged
as a whole too: when it holds far more flagged images than in-source images would
(set_is_shifted), every image of it is flagged. Slices of another source often lie within
either threshold one by one, but not as a crowd.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METHOD = "mahalanobis, pooled features and grey-level histograms, Ledoit-Wolf covariance"
QUANTILE = 0.95  # of the validation scores, with one distance: about 5% flagged
QUANTILE_OF_TWO = 0.975  # each, with both: about 5% flagged by either
TENSOR_PREFIX = "familiarity."  # its tensors in a model file, apart from the model's weights
# A set of slices (a folder, an external set) is unlike the training data as a whole when it
# holds more flagged slices than in-source slices would but once in a thousand sets; the share
# expected in-source is the validation's, never below the share the thresholds aim at.
SET_LEVEL = 0.001
SET_MIN_SLICES = 10
EXPECTED_SHARE = 0.05


@dataclass
class Distance:
    """A Mahalanobis distance to the training images' mean, and the threshold it is divided by."""

    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D), the inverse of the shrunk covariance
    threshold: float

    @classmethod
    def fit(cls, train: np.ndarray, val: np.ndarray, quantile: float) -> Distance:
        from sklearn.covariance import LedoitWolf  # imported here: predicting never fits

        lw = LedoitWolf().fit(np.asarray(train, dtype=np.float64))
        distance = cls(lw.location_, lw.precision_, 1.0)
        distance.threshold = float(np.quantile(distance.of(val), quantile)) or 1.0
        return distance

    def of(self, rows: np.ndarray) -> np.ndarray:
        diff = np.asarray(rows, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", diff, self.precision, diff), 0.0))


@dataclass
class Familiarity:
    """The training images' feature (and grey-level) distribution; an image whose ood score is
    above 1 is called unfamiliar."""

    features: Distance
    grey: Distance | None  # None in files from before the grey-level distance
    val_flagged_share: float
    train_images: int

    def score(self, features: np.ndarray, grey: np.ndarray | None = None) -> np.ndarray:
        """Each image's largest distance over its threshold (`grey`: (N, bins) histograms of the
        decoded slices, needed when the reference has a grey-level part)."""
        score = self.features.of(features) / self.features.threshold
        if self.grey is not None:
            if grey is None:
                raise ValueError("this familiarity reference needs the images' grey histograms")
            score = np.maximum(score, self.grey.of(grey) / self.grey.threshold)
        return score

    @staticmethod
    def flags(scores: np.ndarray) -> pd.Series:
        """True above 1; missing (<NA>) where an image has no score."""
        scores = np.asarray(scores, dtype=float)
        return pd.Series(scores > 1.0, dtype="boolean").mask(np.isnan(scores))

    def set_flags(self, scores: np.ndarray) -> tuple[pd.Series, bool]:
        """The flags of one set of images (one source's, one folder's): each image's own, or
        every scored image's when the set as a whole is unlike the training data
        (set_is_shifted); and whether it is."""
        flags = self.flags(scores)
        shifted = set_is_shifted(flags, self.val_flagged_share)
        if shifted:
            flags = flags.mask(flags.notna(), True)
        return flags, shifted

    def tensors(self) -> dict[str, np.ndarray]:
        parts = {"": self.features, "grey_": self.grey}
        out = {}
        for prefix, part in parts.items():
            if part is not None:
                out[f"{TENSOR_PREFIX}{prefix}mean"] = part.mean
                out[f"{TENSOR_PREFIX}{prefix}precision"] = part.precision
        return out

    def header(self) -> dict:
        header = {
            "method": METHOD,
            "threshold": self.features.threshold,
            "val_flagged_share": self.val_flagged_share,
            "train_images": self.train_images,
        }
        if self.grey is not None:
            header["grey_threshold"] = self.grey.threshold
        return header

    @classmethod
    def from_parts(cls, header: dict, tensors: dict[str, np.ndarray]) -> Familiarity:
        """From a model file's `familiarity` header and its familiarity.* tensors."""

        def part(prefix: str, threshold: float) -> Distance:
            return Distance(
                np.asarray(tensors[f"{TENSOR_PREFIX}{prefix}mean"], dtype=np.float64),
                np.asarray(tensors[f"{TENSOR_PREFIX}{prefix}precision"], dtype=np.float64),
                float(threshold),
            )

        grey = part("grey_", header["grey_threshold"]) if "grey_threshold" in header else None
        return cls(
            features=part("", header["threshold"]),
            grey=grey,
            val_flagged_share=float(header["val_flagged_share"]),
            train_images=int(header["train_images"]),
        )


def fit(
    train_features: np.ndarray,
    val_features: np.ndarray,
    train_grey: np.ndarray | None = None,
    val_grey: np.ndarray | None = None,
) -> Familiarity:
    """Reference from the training images, thresholds from the validation images."""
    both = train_grey is not None
    quantile = QUANTILE_OF_TWO if both else QUANTILE
    reference = Familiarity(
        Distance.fit(train_features, val_features, quantile),
        Distance.fit(train_grey, val_grey, quantile) if both else None,
        0.0,
        len(train_features),
    )
    flags = reference.flags(reference.score(val_features, val_grey))
    reference.val_flagged_share = float(flags.mean())
    return reference


def score_and_flag(reference: Familiarity | None, features: np.ndarray, grey=None):
    """(ood_score, unfamiliar, set_unfamiliar) of one set of scored images: each image's score,
    its flag (its own, or its set's: Familiarity.set_flags), and whether the set as a whole was
    flagged; NaN, <NA> and False without a reference."""
    if reference is None:
        missing = pd.Series(pd.NA, range(len(features)), "boolean")
        return np.full(len(features), np.nan), missing, False
    scores = reference.score(features, grey)
    return scores, *reference.set_flags(scores)


def set_is_shifted(flags, val_share: float) -> bool:
    """True when a set of slices (one source's, one folder's) holds so many flagged slices that
    in-source slices would hold as many less than once in a thousand sets (a one-sided binomial
    test against the validation slices' flagged share): the set as a whole is then unlike the
    training data, and each of its slices is to be flagged with it. Sets under SET_MIN_SLICES
    slices, and slices with no score (missing flags), are not judged."""
    from scipy.stats import binom  # imported here: the model file needs no SciPy

    scored = pd.Series(flags, dtype="boolean").dropna()
    if len(scored) < SET_MIN_SLICES:
        return False
    expected = max(float(val_share), EXPECTED_SHARE)
    return bool(binom.sf(int(scored.sum()) - 1, len(scored), expected) < SET_LEVEL)


def flagged_share(flags: pd.Series) -> float | None:
    """Share of scored images flagged; None when nothing was scored (no reference)."""
    scored = flags.dropna()
    return float(scored.mean()) if len(scored) else None
