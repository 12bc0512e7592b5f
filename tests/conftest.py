"""Shared test helpers: run the real Snakefile in a temporary working directory."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from vitct.data.synthetic import generate

REPO = Path(__file__).resolve().parent.parent


SNAKEFILE = REPO / "Snakefile"


REAL_DATA_ENV = "VITCT_REAL_DATA"  # folder holding sarscov2-ct/ and sarscov2-ct-sample/

# A pipeline small enough for tests (under a minute on 2 cores) that still runs every rule. Its
# recipe is set in full here, so that the schema's defaults (the GPU recipe) do not slow it.
TINY_CONFIG = {
    "dataset": {"source": "demo", "demo": {"n_per_class": 24, "seed": 3}},
    "split": {"test": 0.25, "val": 0.25, "seed": 1},
    "preprocess": {"image_size": 32, "mask": "none", "intensity": "raw"},
    "model": {
        "embed_dim": 16,
        "depth": 1,
        "heads": 2,
        "patch_size": 16,
        "dropout": 0.1,
        "tokenizer": "patch",
        "pooling": "cls",
    },
    "training": {
        "epochs": 2,
        "batch_size": 16,
        "warmup_epochs": 1,
        "augment": True,
        "cutmix": 0.0,
        "label_smoothing": 0.0,
    },
    "sweep": {"grid": {"patch_size": [8, 16], "heads": [1, 2]}, "threads": 1, "mem_mb": 500},
    "final": {"overrides": {"epochs": 2}, "threads": 1, "mem_mb": 500},
    "ablation": {"variants": {}},
    "evaluation": {"attention_images": 1, "bootstrap": 20, "folds": 0, "seeds": [0]},
}


# The preprocessed images of a tiny run (results/data/dataset/images_*.npz).
_TINY_PRE = {"mask": "none", "intensity": "raw", **TINY_CONFIG["preprocess"]}
TINY_IMAGES = "results/data/dataset/images_{image_size}px_{mask}_{intensity}.npz".format(
    **_TINY_PRE
)


def tiny_config(**changes) -> dict:
    """TINY_CONFIG with nested changes, e.g. tiny_config(training={"epochs": 3})."""
    config = copy.deepcopy(TINY_CONFIG)
    for section, values in changes.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """An untrained tiny model file without references (T = 1, no familiarity reference)."""
    from vitct.model.artifact import save_artifact
    from vitct.model.settings import ViTConfig
    from vitct.model.vit import ViT

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_artifact(path, ViT(ViTConfig(**TINY_MODEL)), {"image_size": 16, "mean": 0.4, "std": 0.2})
    return path


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(
    workdir: Path,
    *args: str,
    config: dict | None = None,
    check: bool = True,
    timeout: float = 900,
    snakefile: Path = SNAKEFILE,
) -> subprocess.CompletedProcess:
    """Run `snakemake` on the project's Snakefile in workdir with workdir/config.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write_config(workdir, config)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-6000:]}"
        )
    return proc


def jobs_to_run(workdir: Path, snakefile: Path = SNAKEFILE) -> dict[str, int]:
    """Rule -> job count of a dry run ({} when there is nothing to do)."""
    proc = snakemake(workdir, "--dry-run", "--quiet", "rules", snakefile=snakefile)
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            counts[parts[0]] = int(parts[1])
    return counts


DEMO_RUN_ABLATION = {"variants": {"no_augmentation": {"augment": False}}}


# The final recipe of the shared run also pretrains and cut-mixes, so those paths run in
# Snakemake.
DEMO_RUN_FINAL = {"overrides": {"epochs": 2, "pretrain_epochs": 1, "cutmix": 0.5}}


# Two folds, each trained with two seeds, and an external set: the nested grid, the
# cross-validation runs and external scoring run too.
DEMO_RUN_EVALUATION = {
    **TINY_CONFIG["evaluation"],
    "folds": 2,
    "seeds": [0, 1],
    "external": {"scanner_b": "demo:b"},
}


def demo_run_config(**changes) -> dict:
    """The config of the shared `demo_run`, with changes as tiny_config takes them."""
    shared = {
        "ablation": DEMO_RUN_ABLATION,
        "final": DEMO_RUN_FINAL,
        "evaluation": DEMO_RUN_EVALUATION,
    }
    return tiny_config(**{**shared, **changes})


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One complete run of the tiny demo pipeline, shared by read-only tests."""
    workdir = tmp_path_factory.mktemp("demo_run")
    snakemake(workdir, config=demo_run_config())
    return workdir


def real_data_root() -> Path:
    """The shared real images; skip (saying why) when the variable is not set."""
    value = os.environ.get(REAL_DATA_ENV)
    if not value:
        pytest.skip(
            f"{REAL_DATA_ENV} is not set: point it at the folder holding sarscov2-ct/ "
            "and sarscov2-ct-sample/ (.ci/run sets it to ../shared/data)"
        )
    root = Path(value)
    if not (root / "sarscov2-ct-sample").is_dir():
        pytest.fail(f"{REAL_DATA_ENV}={value} does not hold sarscov2-ct-sample/")
    return root


KAGGLE_STAND_IN = REPO / "tests" / "fakes" / "kaggle_cli.py"


def put_kaggle_stand_in_on_path(folder: Path, monkeypatch) -> None:
    """Make `kaggle` run the stand-in CLI (tests/fakes/kaggle_cli.py) for this test."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "kaggle"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{KAGGLE_STAND_IN}" "$@"\n')
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def rewrite_header(src: Path, dst: Path, change) -> Path:
    """Copy a model file with its JSON header changed by change(meta) (an edit by hand: the
    header's own checksum is left as it was)."""
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["vitct"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    change(meta)
    save_file(state, str(dst), metadata={"vitct": json.dumps(meta)})
    return dst


def learnable_cache(n=64, size=16, seed=0):
    """Class 1 has a bright square: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    x[y == 1, 4:12, 4:12] += 120
    cache = {}
    for split in ("train", "val"):
        cache[f"{split}_x"], cache[f"{split}_y"] = x, y
    cache["mean"], cache["std"] = x.mean() / 255, x.std() / 255
    return cache


# A tiny model file's model: one strided conv for the patches and a class token (the defaults'
# conv stem and attention pooling make a header half as long again, to flip bit by bit).
TINY_MODEL = {
    "image_size": 16,
    "patch_size": 8,
    "embed_dim": 8,
    "depth": 1,
    "heads": 2,
    "tokenizer": "patch",
    "pooling": "cls",
}


# A ViT small enough to train in seconds on 16x16 toy scans.
SMALL_VIT = dict(
    image_size=16,
    patch_size=4,
    embed_dim=16,
    depth=1,
    heads=2,
    dropout=0.0,
    tokenizer="patch",
    pooling="cls",
)


def scans_with_a_square(n=48, size=16, seed=0):
    """Scans with structure to redraw: a bright square at a random place on faint noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(20, 40, (n, size, size)).astype(np.uint8)
    for img, (r, c) in zip(x, rng.integers(0, size - 6, (n, 2)), strict=True):
        img[r : r + 6, c : c + 6] += 150
    return x


def top_edge_cache():
    """scans_with_a_square split 32/16 into train and val; class 1 has a bright top edge."""
    y = np.arange(48) % 2
    x = scans_with_a_square()
    x[y == 1, :2, :] = 250
    return {
        "train_x": x[:32],
        "train_y": y[:32],
        "val_x": x[32:],
        "val_y": y[32:],
        "mean": 0.2,
        "std": 0.2,
    }


@pytest.fixture(scope="module")
def six_per_class_folder(tmp_path_factory) -> Path:
    """A clean synthetic data folder, six images a class (made once per test module)."""
    root = tmp_path_factory.mktemp("clean")
    generate(root, 6, seed=5, progress=False)
    return root


@pytest.fixture
def folder(six_per_class_folder, tmp_path) -> Path:
    """A copy of six_per_class_folder that a test may mess up."""
    root = tmp_path / "data"
    shutil.copytree(six_per_class_folder, root)
    return root


# The split of the grouped-split, neighbours and folds tests.
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def shifted(img: Image.Image, dx: int, dy: int) -> Image.Image:
    """The same slice moved by a few pixels (edge pixels repeated)."""
    a = np.asarray(img.convert("L"))
    return Image.fromarray(np.roll(a, (dy, dx), axis=(0, 1)))


def reencoded(img: Image.Image) -> Image.Image:
    """The same slice through lossy JPEG and back, as RGB."""
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, "JPEG", quality=80)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


@pytest.fixture(scope="module")
def data_with_copies(tmp_path_factory) -> Path:
    """The 80-image real sample, the dataset's two exact duplicate pairs, and for five scans a
    shifted and a re-encoded copy."""
    real = real_data_root()
    root = tmp_path_factory.mktemp("grouped")
    shutil.copytree(real / "sarscov2-ct-sample", root, dirs_exist_ok=True)
    for n in (128, 129, 134, 135):  # (128)=(129) and (134)=(135) byte for byte
        shutil.copy(real / f"sarscov2-ct/COVID/Covid ({n}).png", root / "COVID")
    for k, path in enumerate(sorted((root / "non-COVID").glob("*.png"))[:5]):
        with Image.open(path) as img:
            shifted(img, 3, -2).save(path.with_name(f"shifted {k}.png"))
            reencoded(img).save(path.with_name(f"reencoded {k}.png"))
    return root


def table_of_groups(n_groups: int = 90, seed: int = 0) -> pd.DataFrame:
    """Images in near-duplicate groups of 1-5 slices that share a label; a fifth of the groups
    are the locked test split (`test`), the others one fold (`fold` 0)."""
    rng = np.random.default_rng(seed)
    rows = []
    for group in range(n_groups):
        label = group % 2
        split = "test" if group % 5 == 0 else "train"
        for k in range(rng.integers(1, 6)):
            rows.append(
                {
                    "path": f"{group}/{k}.png",
                    "label": label,
                    "class_dir": ("non-COVID", "COVID")[label],
                    "near_duplicate_group": group,
                    "test": split == "test",
                    "fold": -1 if split == "test" else 0,
                }
            )
    return pd.DataFrame(rows)


VITCT = Path(sys.executable).with_name("vitct")  # the console script of this environment


def vitct(*args: str) -> subprocess.CompletedProcess:
    """Run the `vitct` console script, as a user would."""
    return subprocess.run([str(VITCT), *args], capture_output=True, text=True, timeout=300)


def only(paths):
    """The one path of a glob; fails when there are none or several."""
    found = list(paths)
    assert len(found) == 1, f"expected one file, found {found}"
    return found[0]
