"""``weights="timm:<tag>"``: timm's Hub loading from a Hugging Face cache the test writes (offline, no network),
the offline error, and the tag's transforms compared with timm's own pipeline."""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from oml.models import TimmExtractor
from oml.models.timm_hub import HubWeightsError, timm_pretrained_cfg, transforms_for_timm_tag
from oml.registry.models import get_extractor
from oml.registry.transforms import get_transforms_for_pretrained
from tests.models.layout_utils import write_to_hf_cache

TAG = "test_vit.r160_in1k"  # a tiny ViT (64-d, 6 blocks) whose weights timm publishes as timm/test_vit.r160_in1k


def test_tag_loads_from_a_written_cache_offline(offline_hf_cache: Path) -> None:
    reference = timm.create_model("test_vit", pretrained=False, num_classes=1000).eval()
    with torch.no_grad():
        reference.head.weight.normal_()  # the classifier is dropped: its values must not matter
    write_to_hf_cache(offline_hf_cache, f"timm/{TAG}", reference.state_dict())

    extractor = TimmExtractor(weights=f"timm:{TAG}").eval()  # arch omitted: the tag's architecture
    by_config = get_extractor("timm", weights=f"timm:{TAG}", normalise_features=True).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        assert torch.equal(extractor(x), expected)
        assert torch.allclose(by_config(x), expected / expected.norm(dim=1, keepdim=True))
    assert extractor.arch == TAG and extractor.feat_dim == 64
    assert not any(key.startswith("model.head.") for key in extractor.state_dict())


def test_missing_cache_names_tag_folder_and_what_to_do(offline_hf_cache: Path) -> None:
    with pytest.raises(HubWeightsError) as error:
        TimmExtractor(weights=f"timm:{TAG}")
    message = str(error.value)
    folder = offline_hf_cache / f"models--timm--{TAG}"
    assert TAG in message and str(offline_hf_cache) in message and str(folder) in message
    assert "HF_HUB_OFFLINE=1" in message and f"hf download timm/{TAG}" in message


def test_bad_tags_and_arch() -> None:
    with pytest.raises(ValueError, match="test_vit.r160_in1k"):  # the message lists the arch's tags
        TimmExtractor(weights="timm:test_vit.nothing")
    with pytest.raises(ValueError, match="not on the Hugging Face Hub"):
        timm_pretrained_cfg("test_vit4.r160_in1k")
    with pytest.raises(ValueError, match="not the architecture"):
        TimmExtractor(weights=f"timm:{TAG}", arch="resnet18")
    with pytest.raises(ValueError, match="needs an arch"):
        TimmExtractor(weights=None)


# center crop with bicubic, a 518-pixel DINOv2 without crop, squash mode, bilinear interpolation
TRANSFORM_TAGS = [TAG, "vit_small_patch14_dinov2.lvd142m", "coat_lite_medium_384.in1k", "csatv2.r512_in1k"]


@pytest.mark.parametrize("tag", TRANSFORM_TAGS)
def test_transforms_equal_timms_pipeline(tag: str) -> None:
    ours, im_reader = get_transforms_for_pretrained(f"timm:{tag}")
    theirs = create_transform(**resolve_data_config(pretrained_cfg=timm_pretrained_cfg(tag)))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(90, 140, 3), dtype=np.uint8))
    assert torch.equal(ours(image), theirs(image))
    assert im_reader.__name__ == "imread_pillow"
    assert transforms_for_timm_tag(tag).as_cfg()["name"] == "norm_resize_crop_torch"
