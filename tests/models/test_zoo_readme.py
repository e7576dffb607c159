"""The "How to use models from Zoo?" snippet of OML 0.4.4's README runs unchanged against a local server."""

import hashlib
import re
from pathlib import Path

import pytest
import torch

import oml.const
from oml.models import ViTExtractor
from tests.models.layout_utils import README_0_4_4, random_state_dict, read_layout
from tests.utils.http_server import serve_files


def _zoo_snippet() -> str:
    text = README_0_4_4.read_text()
    block = re.search(r"\[comment\]:zoo-start\n```python\n(.*?)```\n\[comment\]:zoo-end", text, flags=re.S)
    assert block is not None, "the zoo snippet is missing from the 0.4.4 README"
    return block.group(1)


def test_readme_zoo_snippet(
    mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    snippet = _zoo_snippet()
    assert 'ViTExtractor.from_pretrained("vits16_dino")' in snippet

    torch.save(random_state_dict(read_layout("vit_vits16"), seed=21, strip="model."), tmp_path / "dino.pth")
    content = (tmp_path / "dino.pth").read_bytes()
    monkeypatch.setattr(oml.const, "CKPT_SAVE_ROOT", tmp_path / "checkpoints")
    with serve_files({"/dino/dino_deitsmall16_pretrain.pth": content}) as server:
        entry = {
            **ViTExtractor.pretrained_models["vits16_dino"],
            "url": [server.url("/dino/dino_deitsmall16_pretrain.pth")],
            "hash": hashlib.md5(content).hexdigest()[:6],
        }
        monkeypatch.setitem(ViTExtractor.pretrained_models, "vits16_dino", entry)
        namespace: dict = {}
        exec(compile(snippet, "oml-readme-0.4.4.md (zoo)", "exec"), namespace)

    assert namespace["features"].shape == (1, 384)
    assert namespace["img_tensor"].shape == (3, 224, 224)
    assert "vits16_dino" in capsys.readouterr().out
    with torch.no_grad():  # the model loaded from the disk is the same as the downloaded one
        x = namespace["img_tensor"].unsqueeze(0)
        assert torch.equal(namespace["model"].eval()(x), namespace["model_"].eval()(x))
