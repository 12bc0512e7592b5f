"""Temperature scaling: a COVID probability that means what it says.

A ViT trained with cross-entropy on a few hundred slices ends up overconfident (or, with label
smoothing, underconfident): its accuracy may be fine while a "0.99" is right far less often than
99 times in 100. Temperature scaling (Guo et al. 2017) divides the logits by one number T > 0
before the softmax. T is fitted, after training, to minimise the negative log-likelihood of
softmax(logits / T) on the run's inner validation split: the images that already chose its
epoch and its out-of-distribution threshold, never a held-out fold, the locked test or an
external set. A positive T keeps the sign of the logit difference, so it changes no predicted
class, only how sure the probability is: accuracy, MCC and ROC-AUC stay as they were, the
expected calibration error and the Brier score are what it moves.

The temperature travels in the model file's `calibration` header object
(vitct.model.artifact); a file without one (written before this) is read as T = 1, with a note.
vitct.model.inference applies it, in the one place that turns logits into a probability.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np

METHOD = (
    "temperature scaling: one T > 0 minimising the NLL of softmax(logits / T) on the run's "
    "inner validation split"
)
FITTED_ON = "the run's inner validation split (split.val of its own training images)"
# log T is searched in [log 1/20, log 20]: a bound that is hit says so in the log and the
# header (`at_bound`); a perfectly separated validation split drives T to the lower bound.
LOG_BOUNDS = (-math.log(20.0), math.log(20.0))
UNCALIBRATED_NOTE = (
    "the model file carries no calibration (written before temperature scaling): T = 1, "
    "probabilities as the model gives them"
)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / temperature), in float64
    (what vitct.model.inference.covid_probability computes)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    picked = z[np.arange(len(z)), np.asarray(labels, dtype=int)]
    return float(np.mean(log_norm - picked))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) on these (N, 2) logits and 0/1 labels:
    a bounded 1-D minimisation over log T (Brent's method on an interval, deterministic)."""
    from scipy.optimize import minimize_scalar  # imported here: predicting never fits

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != 2 or not len(logits):
        raise ValueError(f"temperature scaling needs (N, 2) logits, got shape {logits.shape}")
    labels = np.asarray(labels, dtype=int)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)),
        bounds=LOG_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    # The search never evaluates the bounds themselves: compare with T = 1 (the model as it
    # is), so a fit is never worse on the images it was fitted on.
    temperature = math.exp(float(result.x))
    if nll(logits, labels, 1.0) <= nll(logits, labels, temperature):
        return 1.0
    return temperature


def images_digest(paths) -> str:
    """sha256 over the sorted image paths a temperature was fitted on (which images, in a line)."""
    return hashlib.sha256("\n".join(sorted(map(str, paths))).encode()).hexdigest()


@dataclass
class Calibration:
    """A fitted temperature and what it did on the images it was fitted on."""

    temperature: float
    images: int  # how many inner-validation images it was fitted on
    images_sha256: str  # images_digest of their paths
    ece_before: float  # inner-validation ECE and Brier score at T = 1 and at `temperature`
    ece_after: float
    brier_before: float
    brier_after: float
    method: str = METHOD
    fitted_on: str = FITTED_ON
    at_bound: bool = False  # T is at an end of LOG_BOUNDS

    def header(self) -> dict:
        """The model file's `calibration` header object (and train_metrics.json's)."""
        return asdict(self)

    @classmethod
    def from_header(cls, header: dict) -> Calibration:
        known = {k: header[k] for k in cls.__dataclass_fields__ if k in header}
        return cls(**known)


def at_bound(temperature: float) -> bool:
    log_t = math.log(temperature)
    return any(abs(log_t - bound) < 1e-3 for bound in LOG_BOUNDS)
