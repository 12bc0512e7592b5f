"""The ViT itself: shapes, switches, attention paths, training loop behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitct.attention import patch_scores, rollout
from vitct.batches import Prefetcher, augment
from vitct.metrics import binary_metrics
from vitct.model import ViT, count_parameters
from vitct.optim import NonFiniteLossError, parameter_groups
from vitct.settings import TrainConfig, ViTConfig
from vitct.train import maybe_compile, train


@pytest.mark.parametrize("tokenizer", ["patch", "conv"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "seq"])
def test_forward_shapes_for_every_switch(tokenizer, pooling):
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        embed_dim=16,
        depth=2,
        heads=2,
        tokenizer=tokenizer,
        pooling=pooling,
        drop_path=0.1,
    )
    model = ViT(cfg).eval()
    logits, attn = model(torch.randn(3, 1, 32, 32), return_attention=True)
    tokens = 16 + (pooling == "cls")
    assert logits.shape == (3, 2)
    assert len(attn) == 2 and attn[0].shape == (3, 2, tokens, tokens)
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(3, 2, tokens))


def test_inspection_path_gives_the_same_logits_as_the_fused_kernel():
    model = ViT(ViTConfig(image_size=32, patch_size=8, embed_dim=16, depth=2, heads=4)).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, return_attention=True)[0])


def test_bad_model_settings_are_refused():
    with pytest.raises(ValueError, match="does not divide image_size"):
        ViTConfig(image_size=32, patch_size=12)
    with pytest.raises(ValueError, match="heads 3 does not divide embed_dim 16"):
        ViTConfig(embed_dim=16, heads=3)
    # 12 divides 48, but the conv stem halves the image per stage: it would build a 6x6 grid
    # where the position embeddings expect 4x4, and fail only at the first batch.
    with pytest.raises(ValueError, match="patch_size 12 is not a power of two"):
        ViTConfig(image_size=48, patch_size=12, tokenizer="conv")
    ViTConfig(image_size=48, patch_size=12, tokenizer="patch")  # one strided conv: any divisor


def test_original_study_model_is_small():
    cfg = ViTConfig(image_size=224, patch_size=16, embed_dim=64, depth=3, heads=4)
    assert count_parameters(ViT(cfg)) < 200_000


def test_rollout_of_identity_attention_is_uniform():
    eye = np.broadcast_to(np.eye(5), (1, 2, 5, 5)).copy()
    scores = rollout([eye, eye], has_cls=True)
    np.testing.assert_allclose(scores, np.zeros((1, 4)))  # the class token only sees itself
    np.testing.assert_allclose(patch_scores(np.full((1, 5, 5), 0.2), has_cls=False), 0.2)


def test_augment_keeps_shape_and_varies_per_sample():
    x = torch.randn(8, 1, 16, 16).repeat(1, 1, 1, 1)
    x[:] = x[0]
    out = augment(x, TrainConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.allclose(out[0], out[1])


def _toy_cache(n=64, size=16, seed=0):
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


def test_training_learns_and_keeps_the_best_epoch():
    cfg = ViTConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2, dropout=0.0)
    tcfg = TrainConfig(epochs=8, batch_size=16, lr=3e-3, warmup_epochs=1, augment=False)
    model, history, best = train(cfg, tcfg, _toy_cache())
    assert best["val_accuracy"] >= 0.9
    assert best["val_mcc"] == history.val_mcc.max()
    assert best["epoch"] == int(history.loc[history.val_mcc.idxmax(), "epoch"])


def test_training_is_reproducible_bit_for_bit():
    cfg = ViTConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2)
    tcfg = TrainConfig(epochs=2, batch_size=16, seed=3)
    _, h1, _ = train(cfg, tcfg, _toy_cache())
    _, h2, _ = train(cfg, tcfg, _toy_cache())
    assert h1.equals(h2)


def test_non_finite_loss_names_epoch_and_batch():
    cfg = ViTConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2)
    tcfg = TrainConfig(epochs=1, batch_size=16, lr=1e30, grad_clip=0.0, warmup_epochs=0)
    cache = _toy_cache()
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch \d+"):
        train(cfg, tcfg, cache)


def test_metrics_take_covid_as_positive():
    y = [1, 1, 1, 0, 0, 0]
    prob = [0.9, 0.8, 0.2, 0.1, 0.1, 0.7]  # COVID: 2 of 3 found; 1 false alarm
    m = binary_metrics(y, prob)
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)


def test_interrupted_then_resumed_training_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    import vitct.train as train_module

    cfg = ViTConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2, dropout=0.2)
    tcfg = TrainConfig(epochs=4, batch_size=16, seed=5)
    cache = _toy_cache()
    model_a, history_a, _ = train(cfg, tcfg, cache)

    real_evaluate = train_module.evaluate_split
    calls = {"n": 0}

    def crash_in_epoch_3(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")  # as if the job died after epoch 2's checkpoint
        return real_evaluate(*args)

    resume = tmp_path / "resume.pt"
    monkeypatch.setattr(train_module, "evaluate_split", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tcfg, cache, resume_path=resume, run_id="r1")
    assert resume.exists()
    monkeypatch.setattr(train_module, "evaluate_split", real_evaluate)
    model_b, history_b, _ = train(cfg, tcfg, cache, resume_path=resume, run_id="r1")
    assert history_a.equals(history_b)
    pairs = zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        assert torch.equal(a, b), name


def test_a_checkpoint_from_another_run_is_not_resumed(tmp_path):
    cfg = ViTConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2)
    resume = tmp_path / "resume.pt"
    train(cfg, TrainConfig(epochs=2, batch_size=16), _toy_cache(), resume_path=resume, run_id="a")
    _, history, _ = train(
        cfg, TrainConfig(epochs=2, batch_size=16), _toy_cache(), resume_path=resume, run_id="b"
    )
    assert list(history.epoch) == [1, 2]


def test_prefetching_batches_changes_nothing_but_the_waiting():
    cfg = ViTConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2, dropout=0.2)
    runs = []
    for prefetch in (False, True):
        timings = {}
        tcfg = TrainConfig(epochs=3, batch_size=16, seed=2, prefetch=prefetch)
        model, history, _ = train(cfg, tcfg, _toy_cache(), timings=timings)
        assert 0 <= timings["data_wait_s"] <= timings["train_s"]
        runs.append((model.state_dict(), history))
    assert runs[0][1].equals(runs[1][1])
    for name, weights in runs[0][0].items():
        assert torch.equal(weights, runs[1][0][name]), name


def test_prefetcher_reraises_errors_from_the_batch_builder():
    def batches():
        yield 1
        raise ValueError("bad batch")

    prefetched = Prefetcher(batches())
    assert next(prefetched) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(prefetched)


def test_prefetcher_stops_when_training_ends_mid_epoch():
    prefetched = Prefetcher(iter(range(1_000_000)))
    assert next(prefetched) == 0
    prefetched.close()  # the thread is blocked on a full queue: close must still return
    assert not prefetched._thread.is_alive()


def test_compile_is_used_on_cuda_only_unless_asked():
    model = ViT(ViTConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, heads=2))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert maybe_compile(model, "auto", cpu) is model
    assert maybe_compile(model, "never", cuda) is model
    assert maybe_compile(model, "auto", cuda) is not model  # wrapping compiles nothing yet
    assert maybe_compile(model, "always", cpu) is not model


def test_paired_differences_score_both_models_on_the_same_resamples():
    from vitct.metrics import paired_differences

    y = np.array([1, 0] * 50)
    right = y.astype(float)
    wrong_on_ten = right.copy()
    wrong_on_ten[:10] = 1 - wrong_on_ten[:10]
    same = paired_differences(y, right, right, n_resamples=50)
    assert same["accuracy"] == [0.0, 0.0, 0.0]
    diff, low, high = paired_differences(y, right, wrong_on_ten, n_resamples=200)["accuracy"]
    assert diff == pytest.approx(0.10)
    assert 0 < low <= diff <= high


TINY = {"image_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 1, "heads": 2}


@pytest.mark.parametrize("pooling", ["cls", "seq"])
def test_weight_decay_leaves_biases_norms_position_embeddings_and_tokens_alone(pooling):
    model = ViT(ViTConfig(**TINY, pooling=pooling))
    decay, keep = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in keep["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert (decay["weight_decay"], keep["weight_decay"]) == (0.05, 0.0)
    assert kept | decayed == set(names.values()) and not kept & decayed
    assert "pos_embed" in kept and ("cls_token" in kept) == (pooling == "cls")
    assert all(n.endswith(".bias") or "norm" in n for n in kept - {"pos_embed", "cls_token"})
    assert "blocks.0.attn.qkv.weight" in decayed and "head.weight" in decayed
    assert "blocks.0.norm1.weight" in kept and "head.bias" in kept


def test_weight_decay_on_every_parameter_when_not_selective():
    cfg = ViTConfig(**TINY)
    model = ViT(cfg)
    assert list(parameter_groups(model, 0.05, selective=False)) == list(model.parameters())
    selective = TrainConfig(epochs=2, batch_size=16, weight_decay=0.5)
    everything = TrainConfig(**{**selective.__dict__, "selective_weight_decay": False})
    _, history, _ = train(cfg, selective, _toy_cache())
    _, history_everything, _ = train(cfg, everything, _toy_cache())
    assert not history.train_loss.equals(history_everything.train_loss)  # reaches the optimiser
