"""ViTUnicomExtractor against a plain re-implementation of Unicom's ViT, with an FP16 release in miniature."""

from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from oml.models import ViTUnicomExtractor
from oml.models.vit_unicom.model import ARCHS
from tests.models.layout_utils import random_state_dict, read_layout


def unicom_reference(sd: Dict[str, Tensor], x: Tensor, heads: int) -> Tensor:
    """Unicom's forward in eval mode, step by step (keys without the ``model.`` prefix)."""
    batch = x.shape[0]
    patch = sd["patch_embed.proj.weight"].shape[-1]
    dim = sd["pos_embed"].shape[-1]
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    tokens = tokens.flatten(2).transpose(1, 2) + sd["pos_embed"]
    length, head_dim = tokens.shape[1], dim // heads
    depth = len({key.split(".")[1] for key in sd if key.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(tokens, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-5)
        q, k, v = (
            F.linear(y, sd[p + "attn.qkv.weight"]).reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        )
        attention = ((q @ k.transpose(-2, -1)) * head_dim**-0.5).softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch, length, dim)
        tokens = tokens + F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.layer_norm(tokens, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-5)
        hidden = F.relu6(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        tokens = tokens + F.linear(hidden, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    flat = F.layer_norm(tokens, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-5).reshape(batch, -1)

    def batch_norm(z: Tensor, prefix: str) -> Tensor:
        mean, var = sd[prefix + "running_mean"], sd[prefix + "running_var"]
        return (z - mean) / torch.sqrt(var + 2e-5) * sd[prefix + "weight"] + sd[prefix + "bias"]

    hidden = batch_norm(flat @ sd["feature.0.weight"].T, "feature.1.")
    return batch_norm(hidden @ sd["feature.2.weight"].T, "feature.3.")


def test_matches_unicom_reference_with_fp16_release(tmp_path: Path) -> None:
    """Unicom's FP16-ViT-B-32.pt is a flat fp16 state dict; it loads (upcast) and gives Unicom's outputs."""
    raw = random_state_dict(read_layout("vit_unicom_vitb32_unicom"), seed=7, strip="model.")
    fp16 = {k: v.half() if v.is_floating_point() else v for k, v in raw.items()}
    torch.save(fp16, tmp_path / "FP16-ViT-B-32.pt")
    extractor = ViTUnicomExtractor(tmp_path / "FP16-ViT-B-32.pt", "vitb32_unicom", normalise_features=True).eval()

    upcast = {k: v.float() if v.is_floating_point() else v for k, v in fp16.items()}
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, reference = extractor(x), unicom_reference(upcast, x, heads=12)
    expected = reference / reference.norm(dim=1, keepdim=True)
    assert ours.shape == (2, 512)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()


def test_drop_path_and_checkpointing() -> None:
    """Drop-path (0.1, linear over the blocks) acts in train mode only; gradient checkpointing changes nothing."""
    torch.manual_seed(0)
    extractor = ViTUnicomExtractor(None, "vitb32_unicom", normalise_features=False, use_gradient_ckpt=True)
    assert extractor.model.grad_checkpointing
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in extractor.model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates[6] == pytest.approx(0.1 * 6 / 11)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        eval_out = extractor.eval()(x)
        extractor.model.set_grad_checkpointing(False)
        assert torch.equal(extractor(x), eval_out)
        extractor.model.feature.eval()  # batch norm of a single sample; only drop-path should act
        extractor.model.blocks.train()
        assert not torch.allclose(extractor(x), eval_out)


@pytest.mark.parametrize("arch", ["vitb16_unicom", "vitl14_unicom", "vitl14_336px_unicom"])
def test_every_arch_forwards(arch: str) -> None:
    size = ARCHS[arch]["img_size"]
    if ARCHS[arch]["embed_dim"] > 768:  # ViT-L (the 336 one has a 604M-parameter head): shapes on meta only
        with torch.device("meta"):
            extractor = ViTUnicomExtractor(None, arch, normalise_features=True).eval()
            out = extractor(torch.randn(2, 3, size, size))
    else:
        extractor = ViTUnicomExtractor(None, arch, normalise_features=True).eval()
        with torch.no_grad():
            out = extractor(torch.randn(1, 3, size, size))
        assert torch.allclose(out.norm(dim=1), torch.ones(1))
    assert out.shape[1] == extractor.feat_dim == ARCHS[arch]["embedding_size"]


def test_input_size_is_checked() -> None:
    with torch.device("meta"):
        extractor = ViTUnicomExtractor(None, "vitb32_unicom", normalise_features=True)
        with pytest.raises(ValueError, match="224, 224"):
            extractor(torch.randn(1, 3, 64, 64))
