"""Presets: the model specs they build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_model_spec_builds_the_reference_vit_and_names_unknown_kinds():
    from trajtransfer.kit.models import ViT
    from trajtransfer.kit.presets import ModelSpec

    vit = ModelSpec("vit", {"depth": 1, "width": 32, "heads": 2}).build()
    assert isinstance(vit, ViT) and len(vit.blocks) == 1
    assert vit(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="transformer"):
        ModelSpec("transformer").build()
