"""Model registries: names, nested extractor configs, the double-weights error and the packaged YAML configs."""

from pathlib import Path

import pytest
import torch
import yaml

from oml.const import CONFIGS_PATH
from oml.models import (
    ConcatSiamese,
    ExtractorWithMLP,
    LinearTrivialDistanceSiamese,
    ResnetExtractor,
    TimmExtractor,
    TrivialDistanceSiamese,
    ViTCLIPExtractor,
    ViTExtractor,
    ViTUnicomExtractor,
)
from oml.registry.models import (
    EXTRACTORS_REGISTRY,
    PAIRWISE_MODELS_REGISTRY,
    get_extractor,
    get_extractor_by_cfg,
    get_pairwise_model,
    get_pairwise_model_by_cfg,
)

RESNET18 = {"name": "resnet", "args": {"arch": "resnet18", "gem_p": None, "remove_fc": True,
                                       "normalise_features": False, "weights": None}}  # fmt: skip


def test_registry_names() -> None:
    assert {
        "resnet": ResnetExtractor,
        "vit": ViTExtractor,
        "vit_clip": ViTCLIPExtractor,
        "vit_unicom": ViTUnicomExtractor,
        "extractor_with_mlp": ExtractorWithMLP,
        "timm": TimmExtractor,
    } == EXTRACTORS_REGISTRY
    assert {
        "linear_siamese": LinearTrivialDistanceSiamese,
        "concat_siamese": ConcatSiamese,
        "trivial_distance_siamese": TrivialDistanceSiamese,
    } == PAIRWISE_MODELS_REGISTRY


def test_nested_extractor_configs() -> None:
    mlp = get_extractor_by_cfg({"name": "extractor_with_mlp", "args": {"mlp_features": [8], "extractor": RESNET18}})
    assert isinstance(mlp.extractor, ResnetExtractor) and mlp.feat_dim == 8
    siamese = get_pairwise_model_by_cfg(
        {"name": "concat_siamese", "args": {"mlp_hidden_dims": [4], "extractor": RESNET18}}
    )
    assert isinstance(siamese, ConcatSiamese) and isinstance(siamese.extractor, ResnetExtractor)
    trivial = get_pairwise_model("trivial_distance_siamese", extractor=RESNET18)
    assert isinstance(trivial.extractor, ResnetExtractor)


def test_weights_inside_and_outside_are_refused(tmp_path: Path) -> None:
    inner = {"name": "resnet", "args": {**RESNET18["args"], "weights": str(tmp_path / "inner.ckpt")}}
    with pytest.raises(ValueError, match="both"):
        get_extractor("extractor_with_mlp", mlp_features=[8], extractor=inner, weights=str(tmp_path / "outer.ckpt"))
    with pytest.raises(ValueError, match="both"):
        get_pairwise_model("concat_siamese", mlp_hidden_dims=[4], extractor=inner, weights=str(tmp_path / "x.ckpt"))


def test_outer_weights_fill_the_inner_extractor(tmp_path: Path) -> None:
    saved = get_extractor_by_cfg({"name": "extractor_with_mlp", "args": {"mlp_features": [8], "extractor": RESNET18}})
    torch.save(saved.state_dict(), tmp_path / "mlp.ckpt")
    loaded = get_extractor(
        "extractor_with_mlp", mlp_features=[8], extractor=RESNET18, weights=str(tmp_path / "mlp.ckpt")
    )
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.state_dict().items())


def test_errors() -> None:
    with pytest.raises(KeyError, match="vit_clip"):
        get_extractor("vit_dino", arch="vits16")
    with pytest.raises(TypeError, match="normalise"):
        get_extractor("vit", arch="vits16", weights=None, normalize_features=True)
    with pytest.raises(KeyError, match="linear_siamese"):
        get_pairwise_model_by_cfg({"name": "siamese", "args": {}})


def _load_yaml(group: str, name: str) -> dict:
    return yaml.safe_load((CONFIGS_PATH / group / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", ["vit", "vit_clip", "vit_unicom", "resnet", "extractor_with_mlp", "timm"])
def test_packaged_extractor_configs(name: str) -> None:
    cfg = _load_yaml("extractor", name)
    assert cfg["name"] == name
    with torch.device("meta"):  # shapes only: building the real weights is covered by tests/models
        extractor = get_extractor_by_cfg(cfg)
    assert isinstance(extractor, EXTRACTORS_REGISTRY[name])


@pytest.mark.parametrize("name", ["concat_siamese", "linear_siamese", "trivial_distance_siamese"])
def test_packaged_pairwise_configs(name: str) -> None:
    cfg = _load_yaml("pairwise_model", name)
    assert cfg["name"] == name
    if name == "concat_siamese":  # its default extractor loads MoCo v2 weights: not downloaded in tests
        assert cfg["args"]["extractor"]["args"]["weights"] == "resnet50_moco_v2"
        cfg["args"]["extractor"]["args"]["weights"] = None
    with torch.device("meta"):
        model = get_pairwise_model_by_cfg(cfg)
    assert isinstance(model, PAIRWISE_MODELS_REGISTRY[name])
