"""What each part of the out-of-distribution flag adds, on a finished run's shipped model.

    python benchmarks/ood_flag.py --results results --site ucsd [--val 0.15 --seed 42]

Every threshold comes from the shipped model's inner validation split (re-dealt here exactly as
its run dealt it: pass the run's split.val and split.seed); the locked test stands for in-source
slices and the site's evaluation part (results/data/site_split.tsv; the whole external set
without one) for slices from elsewhere. Per variant it prints the share flagged on each and the
accuracy of the slices left unflagged:
  features   Mahalanobis distance of the model's pooled features, 95th percentile of validation
  grey       the same on the decoded slices' grey-level histograms
  either     features or grey, each at its 97.5th percentile (the shipped flag)
  set-level  `grey` or `either` (the shipped flag), and every slice of a set whose flagged
             share is implausible for in-source slices (vitct.model.ood.set_is_shifted)
             flagged with it; on the whole sets and on random subsets of --subset slices, as a
             user's folder would be
The aim (issue 45): on the site, the slices not flagged classified at 0.80 or better, or at
least 90% flagged, with at most 5% of in-source slices flagged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from vitct.data.cache import load_cache, load_training_cache
from vitct.data.partition import run_data, run_parts
from vitct.data.site import EVAL
from vitct.model.artifact import load_with_familiarity
from vitct.model.inference import logits_and_features
from vitct.model.ood import QUANTILE, QUANTILE_OF_TWO, Distance, set_is_shifted


def cache_name(pre: dict) -> str:
    return f"images_{pre['image_size']}px_{pre['mask']}_{pre['intensity']}.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--site", required=True, help="the external set standing for elsewhere")
    parser.add_argument("--val", type=float, default=0.15, help="the run's split.val")
    parser.add_argument("--seed", type=int, default=42, help="the run's split.seed")
    parser.add_argument("--subset", type=int, nargs="*", default=[20, 50])
    parser.add_argument("--draws", type=int, default=200, help="random subsets per size")
    args = parser.parse_args()
    results = args.results
    model, meta, _ = load_with_familiarity(results / "runs/final/all/seed0/model.safetensors")
    pre = meta["preprocessing"]
    table = pd.read_csv(results / "data/partition.tsv", sep="\t", keep_default_na=False)
    sources = list(dict.fromkeys(table.source))
    caches = [results / "data" / ("dataset" if i == 0 else s) / cache_name(pre)
              for i, s in enumerate(sources)]  # fmt: skip
    prefixes = ["" if i == 0 else f"{s}/" for i, s in enumerate(sources)]
    parts = run_parts(table, "all", args.val, args.seed)
    data = run_data(load_training_cache(caches, prefixes), table, parts, ("train", "val", "test"))
    site = load_cache(results / "data" / args.site / cache_name(pre))
    split_file = results / "data/site_split.tsv"
    keep = np.ones(len(site["y"]), bool)
    if split_file.exists() and split_file.stat().st_size:
        split = pd.read_csv(split_file, sep="\t", keep_default_na=False)
        if len(split):
            keep = np.isin(site["paths"], split.path[split.part == EVAL].to_numpy())

    def features(x):
        logits, feats = logits_and_features(model, x, pre["mean"], pre["std"], bf16=False)
        return (logits[:, 1] > logits[:, 0]).astype(int), feats

    _, f_train = features(data["train_x"])
    _, f_val = features(data["val_x"])
    sets = {}
    pred, f_test = features(data["test_x"])
    sets["in-source (locked test)"] = (pred == data["test_y"], f_test, data["test_grey"])
    pred, f_site = features(site["x"][keep])
    sets[f"{args.site} (evaluation part)"] = (
        pred == site["y"][keep], f_site, site["histograms"][keep])  # fmt: skip

    variants = {
        "features": [(Distance.fit(f_train, f_val, QUANTILE), 1)],
        "grey": [(Distance.fit(data["train_grey"], data["val_grey"], QUANTILE), 2)],
        "either": [
            (Distance.fit(f_train, f_val, QUANTILE_OF_TWO), 1),
            (Distance.fit(data["train_grey"], data["val_grey"], QUANTILE_OF_TWO), 2),
        ],
    }

    def flags(parts, feats, grey):
        inputs = {1: feats, 2: grey}
        return np.any([d.of(inputs[k]) > d.threshold for d, k in parts], axis=0)

    rows = []
    for name, parts in variants.items():
        val_share = float(flags(parts, f_val, data["val_grey"]).mean())
        print(f"validation flagged share of `{name}`: {val_share:.3f}")
        for set_name, (right, feats, grey) in sets.items():
            flagged = flags(parts, feats, grey)
            rows.append(row(name, set_name, right, flagged))
            if name != "features":
                whole = flagged | set_is_shifted(flagged, val_share)
                rows.append(row(f"{name}, set-level: whole set", set_name, right, whole))
                rng = np.random.default_rng(0)
                for size in args.subset:
                    if size > len(flagged):
                        continue
                    shares, accuracy = [], []
                    for _ in range(args.draws):
                        pick = rng.choice(len(flagged), size, replace=False)
                        f = flagged[pick] | set_is_shifted(flagged[pick], val_share)
                        shares.append(f.mean())
                        if (~f).any():
                            accuracy.append(right[pick][~f].mean())
                    rows.append({
                        "flag": f"{name}, set-level: sets of {size}", "scored on": set_name,
                        "slices": size, "flagged": float(np.mean(shares)),
                        "unflagged accuracy": float(np.mean(accuracy)) if accuracy else None,
                        "accuracy, all": float(right.mean()),
                    })  # fmt: skip
    frame = pd.DataFrame(rows)
    print(frame.to_markdown(index=False, floatfmt=".3f"))


def row(name, set_name, right, flagged) -> dict:
    return {
        "flag": name,
        "scored on": set_name,
        "slices": int(len(flagged)),
        "flagged": float(flagged.mean()),
        "unflagged accuracy": float(right[~flagged].mean()) if (~flagged).any() else None,
        "accuracy, all": float(right.mean()),
    }


if __name__ == "__main__":
    main()
