"""The baselines the ViT must beat, fitted on the images a run saw (its training and inner
validation images) and scored on the same parts as the run:

- `pixels_1nn`: the label of the most similar seen slice, on 32x32 thumbnails. It can only
  memorise: where it scores high, the scored images have near-copies among the seen ones.
- `grey_histogram`: gradient boosting on each slice's histogram of grey levels as decoded, at
  its own resolution. It sees no shape at all; on the real data the classes differ in their grey
  levels as a whole (scanners, dose, export, or denser lungs), so it scores high too, and a ViT
  that does not beat it may be reading grey levels rather than lesions.
- `shortcut_meter`: the same classifier refitted on the histograms of the final recipe's own
  input (after the mask and standardisation): near 0.5, grey levels alone no longer tell the
  classes apart in what the ViT sees; near 1.0, they still give the label away.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from vitct.data.duplicates import nearest_train
from vitct.data.histograms import grey_histograms
from vitct.evaluation.scoring import Part

BASELINES = ("pixels_1nn", "grey_histogram", "shortcut_meter")
TITLES = {
    "pixels_1nn": "1-NN on 32x32 pixels (memorisation)",
    "grey_histogram": "gradient boosting on grey-level histograms (no shape)",
    "shortcut_meter": "shortcut meter: grey levels of the model's own input",
}


def fit_histogram_model(histograms: np.ndarray, labels: np.ndarray, seed: int):
    """The grey-level baseline's classifier, fitted on these histograms (one row per slice)."""
    return HistGradientBoostingClassifier(random_state=seed).fit(histograms, labels)


def fit_baselines(seen: Part, seed: int) -> dict[str, Callable[[Part], np.ndarray]]:
    """Each baseline fitted on the seen images, as a function from a part to its images'
    COVID probabilities."""
    grey = fit_histogram_model(seen.grey, seen.y, seed)
    meter = fit_histogram_model(grey_histograms(seen.x), seen.y, seed)

    def pixels_1nn(part: Part) -> np.ndarray:
        nearest, _ = nearest_train(seen.thumbnails, part.thumbnails)
        return seen.y[nearest].astype(float)

    return {
        "pixels_1nn": pixels_1nn,
        "grey_histogram": lambda part: grey.predict_proba(part.grey)[:, 1],
        "shortcut_meter": lambda part: meter.predict_proba(grey_histograms(part.x))[:, 1],
    }
