"""Shared helpers of the model tests: the reference state-dict layouts and random checkpoints built from them."""

import hashlib
from functools import cache
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

# copies of the project's spec files (shared/spec/state-dict-layouts, shared/reference), so that the
# repository tests itself without the spec folder beside it
DATA = Path(__file__).resolve().parents[1] / "data"
LAYOUTS_DIR = DATA / "state_dict_layouts"
README_0_4_4 = DATA / "oml-readme-0.4.4.md"

TLayout = Dict[str, Tuple[Tuple[int, ...], str]]


@cache
def read_layout(name: str) -> TLayout:
    """``key -> (shape, dtype)`` of ``state-dict-layouts/<name>.txt`` (in file order)."""
    layout = {}
    for line in (LAYOUTS_DIR / f"{name}.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        layout[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype.strip())
    return layout


def layout_of(module: nn.Module) -> TLayout:
    return {key: (tuple(value.shape), str(value.dtype)) for key, value in module.state_dict().items()}


def random_state_dict(layout: TLayout, seed: int = 0, strip: str = "") -> Dict[str, Tensor]:
    """Random tensors with the layout's keys (``strip`` cut from their start), shapes and dtypes.

    Norm weights are near 1, running variances positive, other tensors small, so activations stay sane.
    """
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for key, (shape, dtype) in layout.items():
        name = key[len(strip) :] if key.startswith(strip) else key
        if dtype == "torch.int64":
            value = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) == 1 and key.endswith("weight"):
            value = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            value = 0.05 * torch.randn(shape, generator=generator)
        result[name] = value
    return result


def write_to_hf_cache(cache: Path, repo_id: str, state_dict: Dict[str, Tensor]) -> None:
    """``model.safetensors`` of ``repo_id`` in the layout huggingface_hub keeps: ``refs/main`` names a commit,
    ``snapshots/<commit>/`` holds the files."""
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    tensors = {key: value.contiguous() for key, value in state_dict.items()}
    save_file(tensors, str(repo / "snapshots" / commit / "model.safetensors"))


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


__all__ = [
    "LAYOUTS_DIR",
    "README_0_4_4",
    "read_layout",
    "layout_of",
    "random_state_dict",
    "write_to_hf_cache",
    "md5_of",
]
