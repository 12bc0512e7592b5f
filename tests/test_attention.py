"""Attention rollout: what the maps of vitct.model.attention say about the patches."""

from __future__ import annotations

import numpy as np

from vitct.model.attention import patch_scores, rollout


def test_rollout_of_identity_attention_is_uniform():
    eye = np.broadcast_to(np.eye(5), (1, 2, 5, 5)).copy()
    scores = rollout([eye, eye], has_cls=True)
    np.testing.assert_allclose(scores, np.zeros((1, 4)))  # the class token only sees itself
    np.testing.assert_allclose(patch_scores(np.full((1, 5, 5), 0.2), has_cls=False), 0.2)
