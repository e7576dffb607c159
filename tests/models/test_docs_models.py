"""The python blocks of docs/models.md run, top to bottom in one namespace, and its table lists every zoo entry.

Nothing is downloaded: ``vits16_dino`` is served from 127.0.0.1 with random weights, and the timm tag of the
doc is put into a Hugging Face cache written here, read with HF_HUB_OFFLINE=1.
"""

import hashlib
import re
from pathlib import Path

import pytest
import timm
import torch

import oml.const
from oml.models import ViTExtractor
from oml.registry.models import EXTRACTORS_REGISTRY
from tests.models.layout_utils import random_state_dict, read_layout, write_to_hf_cache
from tests.utils.docs import DOCS, python_blocks, run_all_blocks
from tests.utils.http_server import serve_files

DOC = DOCS / "models.md"
TEXT = DOC.read_text()
BLOCKS = python_blocks(DOC)
DOC_TAG = "mobilenetv3_small_100.lamb_in1k"


def test_doc_blocks_run(tmp_path: Path, offline_hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(BLOCKS) >= 5 and all(f"timm:{DOC_TAG}" in block for block in BLOCKS if "TimmExtractor" in block)
    torch.save(random_state_dict(read_layout("vit_vits16"), seed=4, strip="model."), tmp_path / "dino.pth")
    content = (tmp_path / "dino.pth").read_bytes()
    monkeypatch.setattr(oml.const, "CKPT_SAVE_ROOT", tmp_path / "checkpoints")
    write_to_hf_cache(offline_hf_cache, f"timm/{DOC_TAG}", timm.create_model(DOC_TAG.split(".")[0]).state_dict())
    monkeypatch.chdir(tmp_path)
    with serve_files({"/dino.pth": content}) as server:
        entry = {**ViTExtractor.pretrained_models["vits16_dino"], "url": [server.url("/dino.pth")],
                 "hash": hashlib.md5(content).hexdigest()[:6]}  # fmt: skip
        monkeypatch.setitem(ViTExtractor.pretrained_models, "vits16_dino", entry)
        namespace = run_all_blocks(DOC)
    assert server.requests == ["/dino.pth"]
    assert namespace["extractor"].feat_dim == 1024 and (tmp_path / "resnet18.onnx").is_file()


def _table_rows() -> list:
    table = TEXT[TEXT.index("### Where the weights come from") : TEXT.index("## DINOv2")]
    return [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| `")]


@pytest.mark.parametrize("cls", EXTRACTORS_REGISTRY.values(), ids=lambda cls: cls.__name__)
def test_table_lists_every_entry_with_its_class_and_licence(cls: type) -> None:
    rows = _table_rows()
    for name, entry in cls.pretrained_models.items():
        row = next((row for row in rows if f"`{name}`" in row[0] or _in_range(name, row[0])), None)
        assert row is not None, name
        assert row[1].strip() == f"`{cls.__name__}`", name
        licence = row[3].strip()
        assert licence.split(";")[0].split(" (")[0] in entry.licence, (name, licence, entry.licence)


def _in_range(name: str, cell: str) -> bool:
    """``resnet18_imagenet1k_v1`` ... ``resnet152_imagenet1k_v1`` covers the names between them."""
    ends = re.findall(r"`(\w+)`", cell)
    return "..." in cell and len(ends) == 2 and name.split("_", 1)[1] == ends[0].split("_", 1)[1]
