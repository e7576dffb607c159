"""The Python snippets of OML 0.4.4's README run unchanged against our package.

The only thing replaced is the network: the ``vits16_dino`` zoo entry points at a local HTTP server
that serves a checkpoint with random weights in DINO's raw layout (as the zoo test does). The
zoo snippet itself is tested in ``tests/models/test_zoo_readme.py``; the retrieval snippet with the
inference module.
"""

import hashlib
import re
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

import oml.const
from oml.models import ViTExtractor
from tests.models.layout_utils import README_0_4_4, random_state_dict, read_layout
from tests.utils.http_server import serve_files


def snippet(name: str) -> str:
    text = README_0_4_4.read_text()
    block = re.search(rf"\[comment\]:{name}-start\n```python\n(.*?)```\n\[comment\]:{name}-end", text, flags=re.S)
    assert block is not None, f"the {name} snippet is missing from the 0.4.4 README"
    return block.group(1)


@pytest.fixture()
def served_dino(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``vits16_dino`` downloads a random checkpoint from 127.0.0.1; the working directory is a temp dir."""
    torch.save(random_state_dict(read_layout("vit_vits16"), seed=3, strip="model."), tmp_path / "dino.pth")
    content = (tmp_path / "dino.pth").read_bytes()
    monkeypatch.setattr(oml.const, "CKPT_SAVE_ROOT", tmp_path / "checkpoints")
    monkeypatch.chdir(tmp_path)
    with serve_files({"/dino.pth": content}) as server:
        entry = {
            **ViTExtractor.pretrained_models["vits16_dino"],
            "url": [server.url("/dino.pth")],
            "hash": hashlib.md5(content).hexdigest()[:6],
        }
        monkeypatch.setitem(ViTExtractor.pretrained_models, "vits16_dino", entry)
        yield server


def run(name: str) -> Dict[str, Any]:
    namespace: Dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(snippet(name), f"oml-readme-0.4.4.md ({name})", "exec"), namespace)
    return namespace


def test_vanilla_training(served_dino, capsys: pytest.CaptureFixture) -> None:
    namespace = run("vanilla-train")
    assert torch.isfinite(namespace["loss"]) and {"active_tri", "pos_dist", "neg_dist"} <= set(
        namespace["criterion"].last_logs
    )
    assert "active_tri" in capsys.readouterr().out


def test_vanilla_validation(served_dino) -> None:
    namespace = run("vanilla-validation")
    calculator = namespace["calculator"]
    assert set(calculator.metrics["OVERALL"]) >= {"cmc", "precision", "map"}
    assert 0 <= float(calculator.metrics["OVERALL"]["cmc"][5]) <= 1
    assert len(calculator.metrics_unreduced["OVERALL"]["cmc"][5]) == 72


def test_lightning_training_and_validation(served_dino, tmp_path: Path) -> None:
    namespace = run("lightning")
    trainer = namespace["trainer"]
    assert trainer.current_epoch == 3
    assert "OVERALL/cmc/5" in trainer.logged_metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = next((tmp_path / "lightning_logs").glob("version_*"))
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    assert len(events.Scalars("OVERALL/cmc/5")) == 3  # one value per epoch
    assert any(tag.startswith("image_logs/") for tag in events.Tags()["images"]), "worst queries are logged"
