"""The one loader: its layout steps one by one, and the order in which ``load_weights`` applies them."""

from pathlib import Path

import pytest
import torch
from torch import nn

from oml.models import ConcatSiamese, ResnetExtractor
from oml.models.loading import (
    build_with_weights,
    convert_state_dict,
    cut_through,
    keep_own_keys,
    load_weights,
    oml_prefix,
    strip_known_prefix,
)


def _module() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))  # keys 0.weight, 0.bias, 1.weight, 1.bias


def _tensors(keys: list) -> dict:
    return {key: torch.full((1,), float(i)) for i, key in enumerate(keys)}


def test_steps() -> None:
    module = _module()
    sd = _tensors(["text.w", "model.visual.0.weight", "visual.1.bias"])
    assert list(cut_through("visual.")(sd, module)) == ["text.w", "0.weight", "1.bias"]
    assert list(keep_own_keys({"0.weight": 1, "head.w": 2}, module)) == ["0.weight"]
    strip = strip_known_prefix(("", "model.", "module."))
    assert list(strip({"module.0.weight": 1, "module.1.bias": 2, "queue": 3}, module)) == ["0.weight", "1.bias"]
    assert strip({"a.b": 1}, module) == {"a.b": 1}  # nothing fits: left to a later step
    assert list(oml_prefix("1.bias")({"m.0.weight": 1, "m.1.bias": 2}, module)) == ["0.weight", "1.bias"]
    with pytest.raises(ValueError, match="criterion"):  # OML's rule: every key must have the prefix
        oml_prefix("1.bias")({"m.1.bias": 1, "other.criterion": 2}, module)


def test_loss_weights_are_dropped_before_the_steps() -> None:
    seen = []
    convert_state_dict({"criterion.weight": 1, "a": 2}, _module(), lambda sd, m: seen.append(list(sd)) or sd)
    assert seen == [["a"]]


def test_load_weights_is_strict_and_names_the_key(tmp_path: Path) -> None:
    saved = _module()
    torch.save({"state_dict": {f"model.{k}": v for k, v in saved.state_dict().items()}}, tmp_path / "m.ckpt")
    loaded = build_with_weights(_module, tmp_path / "m.ckpt", {}, "Test", oml_prefix("1.bias"))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.state_dict().items())
    assert loaded[0].weight.device.type == "cpu"  # built on meta, then given storage and loaded
    torch.save({"model.0.weight": saved[0].weight, "model.1.bias": saved[1].bias}, tmp_path / "part.ckpt")
    with pytest.raises(RuntimeError, match=r"0\.bias"):
        load_weights(_module(), tmp_path / "part.ckpt", {}, "Test", oml_prefix("1.bias"))
    with pytest.raises(FileNotFoundError, match="Test"):
        load_weights(_module(), tmp_path / "none.ckpt", {}, "Test")


def test_concat_siamese_drops_loss_weights_too(tmp_path: Path) -> None:
    """OML did not drop ``criterion.weight`` for ConcatSiamese (only for extractors); the one loader does."""
    extractor = ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=True, normalise_features=False)
    saved = ConcatSiamese(extractor, mlp_hidden_dims=[4])
    torch.save({**saved.state_dict(), "criterion.weight": torch.ones(2)}, tmp_path / "s.ckpt")
    loaded = ConcatSiamese(extractor, mlp_hidden_dims=[4], weights=tmp_path / "s.ckpt")
    assert torch.equal(loaded.head[0].weight, saved.head[0].weight)
