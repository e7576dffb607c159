"""State-dict helpers, key mappings and TorchScript graph patches."""

import warnings

import pytest
import torch
from torch import nn

from oml.models.state_dict_mapping import KeyMapping, KeyRule, attach_key_mapping
from oml.models.utils import (
    filter_state_dict,
    find_prefix_in_state_dict,
    init_on_meta,
    materialise,
    patch_device,
    patch_device_and_float,
    remove_criterion_in_state_dict,
    remove_prefix_from_state_dict,
    unwrap_state_dict,
)


def test_prefix_helpers() -> None:
    sd = {"model.model.blocks.0.norm1.bias": 0, "model.model.norm.bias": 1}
    assert find_prefix_in_state_dict(sd, "norm.bias") == "model.model."  # norm1.bias does not match
    assert remove_prefix_from_state_dict(sd, "norm.bias") == {"blocks.0.norm1.bias": 0, "norm.bias": 1}
    assert remove_prefix_from_state_dict({"norm.bias": 1}, "norm.bias") == {"norm.bias": 1}
    with pytest.raises(ValueError, match="criterion.weight"):
        remove_prefix_from_state_dict({"model.norm.bias": 1, "criterion.weight": 2}, "norm.bias")
    with pytest.raises(KeyError, match="layer4"):
        remove_prefix_from_state_dict({"a": 1}, "layer4.")
    assert filter_state_dict({"a": 1, "b": 2}, {"a"}) == {"a": 1}
    assert remove_criterion_in_state_dict({"a": 1, "criterion.weight": 2}) == {"a": 1}
    assert unwrap_state_dict({"state_dict": {"a": 1}, "epoch": 2}) == {"a": 1}
    with pytest.raises(TypeError, match="list"):
        unwrap_state_dict([1, 2])


class _Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 3))
        self.blocks = nn.ModuleList([nn.Linear(3, 3) for _ in range(2)])


def test_key_mapping_saves_and_loads_external_names() -> None:
    mapping = KeyMapping(
        rules=[
            KeyRule("token", "class_embedding", lambda x: x.reshape(-1), lambda x: x.reshape(1, 1, -1)),
            KeyRule("blocks.{i}.{p}", "layers.{i}.dense_{p}"),
        ],
        external_order=lambda key: (key != "class_embedding", key),
    )
    parent = nn.Sequential(attach_key_mapping(_Inner(), mapping))
    sd = parent.state_dict()
    assert list(sd) == ["0.class_embedding"] + sorted(
        f"0.layers.{i}.dense_{p}" for i in range(2) for p in ("bias", "weight")
    )
    assert sd["0.class_embedding"].shape == (3,)

    new = {key: torch.randn_like(value) for key, value in sd.items()}
    parent.load_state_dict(new)
    assert torch.equal(parent[0].token.flatten(), new["0.class_embedding"])
    assert torch.equal(parent[0].blocks[1].weight, new["0.layers.1.dense_weight"])

    new.pop("0.layers.0.dense_bias")
    with pytest.raises(RuntimeError, match=r"0\.layers\.0\.dense_bias"):
        parent.load_state_dict(new)


def test_init_on_meta_and_materialise() -> None:
    with init_on_meta():
        layer = nn.Linear(4, 2)
    assert layer.weight.device.type == "meta"
    materialise(layer)
    layer.load_state_dict({"weight": torch.ones(2, 4), "bias": torch.zeros(2)})
    assert torch.equal(layer(torch.ones(1, 4)), torch.full((1, 2), 4.0))
    with init_on_meta(False):
        assert nn.Linear(1, 1).weight.device.type == "cpu"
    module = nn.Module()
    module.register_buffer("cache", torch.zeros(1), persistent=False)
    with pytest.raises(RuntimeError, match="cache"):
        materialise(module)


class _Half(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float16) * 5


class _ToCuda(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.device("cuda")) + 1


def test_patch_torchscript_graphs() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        half, to_cuda = torch.jit.script(_Half()), torch.jit.script(_ToCuda())
    patch_device_and_float(half, "cpu")
    out = half(torch.ones(2))
    assert out.dtype == torch.float32 and torch.equal(out, torch.full((2,), 5.0))  # the shared constant 5 stays
    patch_device(to_cuda, "cpu")
    assert torch.equal(to_cuda(torch.ones(2)), torch.full((2,), 2.0))
