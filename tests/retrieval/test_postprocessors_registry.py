import pytest
import torch
import yaml

from oml.const import CONFIGS_PATH
from oml.models.meta.siamese import LinearTrivialDistanceSiamese, TrivialDistanceSiamese
from oml.registry._base import RegistryKeyError
from oml.registry.postprocessors import POSTPROCESSORS_REGISTRY, get_postprocessor, get_postprocessor_by_cfg
from oml.retrieval.postprocessors.pairwise import PairwiseEmbeddingsPostprocessor, PairwiseImagesPostprocessor


def _packaged(name: str) -> dict:
    return yaml.safe_load((CONFIGS_PATH / "postprocessor" / f"{name}.yaml").read_text())


def test_registry_names() -> None:
    assert {
        "pairwise_images": PairwiseImagesPostprocessor,
        "pairwise_embeddings": PairwiseEmbeddingsPostprocessor,
    } == POSTPROCESSORS_REGISTRY


def test_packaged_embeddings_config() -> None:
    cfg = _packaged("pairwise_embeddings")
    pp = get_postprocessor_by_cfg(cfg)
    assert isinstance(pp, PairwiseEmbeddingsPostprocessor) and pp.top_n == 5
    assert isinstance(pp.model, LinearTrivialDistanceSiamese) and pp.model.feat_dim == 16
    out = pp.process(torch.rand(2, 6), torch.rand(2, 16), torch.rand(6, 16))
    assert out.shape == (2, 6)


def test_packaged_images_config() -> None:
    cfg = _packaged("pairwise_images")
    with torch.device("meta"):  # shapes only (a random ViT-S)
        pp = get_postprocessor_by_cfg(cfg)
    assert isinstance(pp, PairwiseImagesPostprocessor) and pp.top_n == 3
    assert isinstance(pp.model, TrivialDistanceSiamese)
    assert pp.transforms.transforms[0].size == (224, 224)  # the nested transforms config was built


def test_objects_are_accepted_as_they_are() -> None:
    model = LinearTrivialDistanceSiamese(4, identity_init=True)
    pp = get_postprocessor("pairwise_embeddings", top_n=2, pairwise_model=model, num_workers=0, batch_size=4)
    assert pp.model is model


def test_errors() -> None:
    with pytest.raises(RegistryKeyError, match="Unknown postprocessor 'pairwise'"):
        get_postprocessor("pairwise")
    model = {"name": "linear_siamese", "args": {"feat_dim": 4, "identity_init": True}}
    with pytest.raises(TypeError, match="Cannot build postprocessor 'pairwise_embeddings'.*top_k"):
        get_postprocessor("pairwise_embeddings", top_k=2, pairwise_model=model, num_workers=0, batch_size=4)
    with pytest.raises(ValueError, match="top_n must be an integer > 1"):
        get_postprocessor("pairwise_embeddings", top_n=1, pairwise_model=model, num_workers=0, batch_size=4)
    with pytest.raises(ValueError, match="extra keys"):
        get_postprocessor_by_cfg({"name": "pairwise_embeddings", "args": {}, "oops": 1})
