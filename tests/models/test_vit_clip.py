"""ViTCLIPExtractor against a plain re-implementation of CLIP's image tower, and the checkpoint formats it reads."""

import warnings
from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oml.models import ViTCLIPExtractor
from oml.models.checkpoint import UnsafeCheckpointError
from oml.models.vit_clip.model import ARCHS
from tests.models.layout_utils import md5_of, random_state_dict, read_layout


def clip_reference(sd: Dict[str, Tensor], x: Tensor, heads: int) -> Tensor:
    """OpenAI's VisionTransformer.forward, step by step (keys without the ``visual.`` prefix)."""
    batch = x.shape[0]
    width = sd["class_embedding"].shape[0]
    patch = sd["conv1.weight"].shape[-1]
    tokens = F.conv2d(x, sd["conv1.weight"], stride=patch).reshape(batch, width, -1).permute(0, 2, 1)
    cls = sd["class_embedding"] + torch.zeros(batch, 1, width)
    tokens = torch.cat([cls, tokens], dim=1) + sd["positional_embedding"]
    tokens = F.layer_norm(tokens, (width,), sd["ln_pre.weight"], sd["ln_pre.bias"], eps=1e-5)
    length, head_dim = tokens.shape[1], width // heads
    depth = len({key.split(".")[2] for key in sd if key.startswith("transformer.resblocks.")})
    for i in range(depth):
        p = f"transformer.resblocks.{i}."
        y = F.layer_norm(tokens, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps=1e-5)
        q, k, v = F.linear(y, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        attention = (q @ k.transpose(-2, -1) / head_dim**0.5).softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch, length, width)
        tokens = tokens + F.linear(out, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"])
        y = F.layer_norm(tokens, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps=1e-5)
        hidden = F.linear(y, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
        hidden = hidden * torch.sigmoid(1.702 * hidden)
        tokens = tokens + F.linear(hidden, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    cls = F.layer_norm(tokens[:, 0], (width,), sd["ln_post.weight"], sd["ln_post.bias"], eps=1e-5)
    return cls @ sd["proj"]


class _Tree(nn.Module):
    """A module holding a flat state dict under its dotted names (to mimic OpenAI's scripted model)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def _tree_from(state_dict: Dict[str, Tensor]) -> nn.Module:
    root = _Tree()
    for key, value in state_dict.items():
        *path, name = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, _Tree())
            module = getattr(module, part)
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return root


def write_openai_archive(visual: Dict[str, Tensor], path: Path) -> Path:
    """A TorchScript archive like OpenAI's ``ViT-B-32.pt``: the whole CLIP scripted, fp16 weights, ``.visual``."""
    full = {f"visual.{key}": value.half() for key, value in visual.items()}
    full["token_embedding.weight"] = torch.randn(10, 4).half()
    full["logit_scale"] = torch.tensor(4.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_tree_from(full)), str(path))
    return path


@pytest.fixture(scope="module")
def visual_b32() -> Dict[str, Tensor]:
    return random_state_dict(read_layout("vit_clip_vitb32_224"), seed=5, strip="visual.")


def test_matches_clip_reference(visual_b32, tmp_path: Path) -> None:
    torch.save({f"visual.{k}": v for k, v in visual_b32.items()}, tmp_path / "oml.ckpt")
    extractor = ViTCLIPExtractor(tmp_path / "oml.ckpt", "vitb32_224", normalise_features=False).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, reference = extractor(x), clip_reference(visual_b32, x, heads=12)
    assert ours.shape == (2, 512)
    assert torch.allclose(ours, reference, atol=1e-4, rtol=1e-4), (ours - reference).abs().max()

    extractor.normalise_features = True
    with torch.no_grad():
        assert torch.allclose(extractor(x), reference / reference.norm(dim=1, keepdim=True), atol=1e-5)


def test_ruclip_checkpoint_with_text_tower(visual_b32, tmp_path: Path) -> None:
    """ruCLIP's pytorch_model.bin: visual.* plus text-side keys, some of which collide with visual names."""
    content = {f"visual.{k}": v.clone() for k, v in visual_b32.items()}
    content["positional_embedding"] = torch.randn(77, 512)  # text tower, same name as a visual key
    content["transformer.resblocks.0.ln_1.weight"] = torch.randn(512)
    content["token_embedding.weight"] = torch.randn(100, 512)
    content["logit_scale"] = torch.tensor(1.0)
    torch.save(content, tmp_path / "pytorch_model.bin")
    extractor = ViTCLIPExtractor(tmp_path / "pytorch_model.bin", "vitb32_224", normalise_features=False)
    loaded = extractor.state_dict()
    assert all(torch.equal(loaded[f"visual.{k}"], v) for k, v in visual_b32.items())


def test_openai_torchscript_archive(visual_b32, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_openai_archive(visual_b32, tmp_path / "ViT-B-32.pt")

    # an archive that no zoo entry vouches for is never opened
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        ViTCLIPExtractor(path, "vitb32_224", normalise_features=False)

    entry = {**ViTCLIPExtractor.pretrained_models["openai_vitb32_224"], "hash": md5_of(path)}
    monkeypatch.setitem(ViTCLIPExtractor.pretrained_models, "openai_vitb32_224", entry)
    extractor = ViTCLIPExtractor(path, "vitb32_224", normalise_features=False).eval()
    loaded = extractor.state_dict()
    for key, value in visual_b32.items():  # fp16 in the archive, upcast exactly
        assert loaded[f"visual.{key}"].dtype == torch.float32
        assert torch.equal(loaded[f"visual.{key}"], value.half().float())
    x = torch.randn(1, 3, 224, 224)
    half_weights = {k: v.half().float() for k, v in visual_b32.items()}
    with torch.no_grad():
        assert torch.allclose(extractor(x), clip_reference(half_weights, x, heads=12), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", sorted(set(ARCHS) - {"vitb32_224"}))  # B/32 runs in test_matches_clip_reference
def test_every_arch_forwards(arch: str) -> None:
    size = ARCHS[arch]["input_resolution"]
    if ARCHS[arch]["width"] > 768:  # ViT-L: built and run on the meta device (shapes only), to stay fast
        with torch.device("meta"):
            extractor = ViTCLIPExtractor(None, arch, normalise_features=True)
            out = extractor(torch.randn(2, 3, size, size))
    else:
        extractor = ViTCLIPExtractor(None, arch, normalise_features=True).eval()
        with torch.no_grad():
            out = extractor(torch.randn(1, 3, size, size))
        assert torch.allclose(out.norm(dim=1), torch.ones(1))
    assert out.shape[1] == extractor.feat_dim == ARCHS[arch]["output_dim"]


def test_vitl14_336_is_built_at_336() -> None:
    """OML 0.4.4 built it at 224, so OpenAI's ViT-L-14-336px (577 positions) could not load."""
    with torch.device("meta"):
        extractor = ViTCLIPExtractor(None, "vitl14_336", normalise_features=False)
    assert extractor.state_dict()["visual.positional_embedding"].shape == (577, 1024)
    assert ViTCLIPExtractor.pretrained_models["openai_vitl14_336"]["transforms"]["args"]["im_size"] == 336


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="vitb8_224"):
        ViTCLIPExtractor(None, "vitb8_224")
    with torch.device("meta"):
        extractor = ViTCLIPExtractor(None, "vitb32_224")
        with pytest.raises(ValueError, match="224, 224"):
            extractor(torch.randn(1, 3, 64, 64))
