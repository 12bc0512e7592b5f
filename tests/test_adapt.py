"""Adapting a model file to a new site with a few of its labelled slices: what fine-tuning trains
and leaves, how slices are drawn, `vitct adapt` and its bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, TINY_MODEL, vitct

from vitct.data.site import draw_by_group
from vitct.data.synthetic import generate
from vitct.model.artifact import load_artifact, read_metadata, save_artifact
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.training.adapt import DEFAULTS, finetune, trainable_modules

PRE = {"image_size": 16, "mean": 0.4, "std": 0.2}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_artifact(path, ViT(ViTConfig(**TINY_MODEL)), PRE, training={"label_smoothing": 0.1})
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Labelled slices of another scanner, eight a class."""
    root = tmp_path_factory.mktemp("site")
    generate(root, 8, seed=11, progress=False, scanner="b")
    return root


def toy_images(n=24, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
    x[y == 1, 4:12, 4:12] += 120
    return x, y


@pytest.mark.parametrize("trainable", ["head", "last_block", "all"])
def test_finetuning_trains_what_it_says_and_leaves_the_rest(trainable):
    torch.manual_seed(0)
    model = ViT(ViTConfig(**{**TINY_MODEL, "depth": 2}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = toy_images()
    losses = finetune(
        model, x, y, 0.2, 0.2, epochs=3, lr=1e-2, trainable=trainable, seed=0, batch_size=8
    )
    assert len(losses) == 3 and losses[-1] < losses[0]
    trained = {
        f"{name}.{p}" if name else p
        for module in trainable_modules(model, trainable)
        for name, mod in model.named_modules()
        if mod is module
        for p, _ in module.named_parameters()
    }
    for key, value in model.state_dict().items():
        changed = not torch.equal(value, before[key])
        assert changed == (key in trained), key
    assert all(p.requires_grad for p in model.parameters())  # handed back as it came


def test_finetuning_needs_both_classes():
    x, y = toy_images()
    with pytest.raises(ValueError, match="both classes"):
        finetune(ViT(ViTConfig(**TINY_MODEL)), x, y * 0, 0.2, 0.2, epochs=1, lr=1e-3,
                 trainable="head", seed=0)  # fmt: skip


def test_a_draw_takes_whole_groups_of_both_classes_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), rng.integers(1, 4, 40))
    table = pd.DataFrame({"near_duplicate_group": groups, "label": groups % 2})
    picked = draw_by_group(table, 10, seed=3)
    chosen = table.iloc[picked]
    for group in chosen.near_duplicate_group.unique():  # whole groups only
        assert (table.near_duplicate_group == group).sum() == (
            chosen.near_duplicate_group == group
        ).sum()
    assert set(chosen.label) == {0, 1} and 10 <= len(chosen) <= 14
    assert list(picked) == list(draw_by_group(table, 10, seed=3))
    assert list(picked) != list(draw_by_group(table, 10, seed=4))


def test_the_commands_defaults_are_the_schemas():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    adaptation = schema["properties"]["adaptation"]["properties"]
    assert {k: adaptation[k]["default"] for k in DEFAULTS} == DEFAULTS


def test_vitct_adapt_writes_an_adapted_model_that_says_on_what(model_file, site, tmp_path):
    out = tmp_path / "adapted.safetensors"
    proc = vitct("adapt", str(model_file), str(site), "-o", str(out), "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert "adapted on 16 labelled slices" in proc.stderr
    record = read_metadata(out)["data"]["adaptation"]
    assert record["slices"] == 16 and record["classes"] == {"COVID": 8, "non-COVID": 8}
    assert record["folder"] == str(site) and record["epochs"] == 2
    assert record["trainable"] == DEFAULTS["trainable"] and len(record["manifest_sha256"]) == 64
    original, adapted = load_artifact(model_file)[0], load_artifact(out)[0]
    assert not torch.equal(original.head.weight, adapted.head.weight)
    assert torch.equal(original.patch_embed.proj.weight, adapted.patch_embed.proj.weight)


def test_vitct_adapt_refuses_one_class_only(model_file, site, tmp_path):
    only_covid = tmp_path / "site"
    (only_covid / "COVID").mkdir(parents=True)
    for path in sorted((site / "COVID").glob("*.png")):
        (only_covid / "COVID" / path.name).write_bytes(path.read_bytes())
    proc = vitct("adapt", str(model_file), str(only_covid), "-o", str(tmp_path / "a.safetensors"))
    assert proc.returncode == 2
    assert "class folder" in proc.stderr and "non-COVID" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_vitct_adapt_refuses_too_few_slices(model_file, site, tmp_path):
    few = tmp_path / "few"
    for class_dir in ("COVID", "non-COVID"):
        (few / class_dir).mkdir(parents=True)
        first = sorted((site / class_dir).glob("*.png"))[0]
        (few / class_dir / first.name).write_bytes(first.read_bytes())
    proc = vitct("adapt", str(model_file), str(few), "-o", str(tmp_path / "a.safetensors"))
    assert proc.returncode == 2
    assert "too few usable labelled slices (1 COVID, 1 non-COVID)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "a.safetensors").exists()


def test_vitct_adapt_refuses_a_file_that_is_no_vitct_model(site, tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not a model at all")
    proc = vitct("adapt", str(other), str(site), "-o", str(tmp_path / "a.safetensors"))
    assert proc.returncode == 2
    assert "is not a readable vitct model file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_vitct_adapt_refuses_an_output_it_cannot_write_before_any_work(model_file, site, tmp_path):
    proc = vitct("adapt", str(model_file), str(site), "-o", str(tmp_path))
    assert proc.returncode == 2
    assert "it is a folder: name a file for -o" in proc.stderr
