"""The ``oml`` command: help and clear errors (its examples run in tests/reliability/test_cli_help_examples.py)."""

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from oml.cli import main
from oml.const import PROJECT_ROOT

TRAIN_YAML = PROJECT_ROOT / "pipelines" / "mock" / "train.yaml"
FAST = [
    "max_epochs=1",
    "valid_period=1",
    "extractor.name=timm",
    "extractor.args.arch=resnet10t",
    "transforms_train.args.im_size=32",
    "transforms_val.args.im_size=32",
    "+lightning_trainer_extra_args.enable_progress_bar=False",
]


def oml(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oml.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_help(tmp_path: Path) -> None:
    result = oml(["--help"], tmp_path)
    assert result.returncode == 0
    for command in ("train", "validate", "predict", "train-postprocessor"):
        assert command in result.stdout
    assert "overrides" in oml(["train", "--help"], tmp_path).stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["criterion.name=triplet_loss"], "Unknown criterion 'triplet_loss'. Available: ["),
        (["~seed"], "misses the required keys ['seed']"),
        (["sampler=category_balance"], "has no 'category' column"),
        (["extractor.args.arch=resnet999"], "resnet999"),
    ],
)
def test_clear_errors(
    mock_dataset_root: Path,
    tmp_path: Path,
    overrides: List[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # in-process (a subprocess per case would cost a torch import each)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(TRAIN_YAML), f"dataset_root={mock_dataset_root}", *FAST, *overrides])
    assert exit_info.value.code != 0
    captured = capsys.readouterr()
    assert message in captured.err + captured.out


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="nope.yaml does not exist"):
        main(["validate", str(tmp_path / "nope.yaml")])


def test_relative_paths_are_resolved_from_the_starting_folder(tmp_path: Path) -> None:
    from oml.cli import absolutise_paths

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "best.ckpt").write_bytes(b"x")
    cfg = {
        "dataset_root": "data",
        "save_dir": "/abs/out",
        "extractor": {"name": "vit", "args": {"weights": "ckpt/best.ckpt"}},
        "postprocessor": {"args": {"pairwise_model": {"args": {"weights": "vits16_dino"}}}},
        "tags": ["data"],
        "logger": {"name": "tensorboard", "args": {"save_dir": "."}},
    }
    fixed = absolutise_paths(cfg, tmp_path)
    assert fixed["dataset_root"] == str(tmp_path / "data") and fixed["save_dir"] == "/abs/out"
    assert fixed["extractor"]["args"]["weights"] == str(tmp_path / "ckpt" / "best.ckpt")
    assert fixed["postprocessor"]["args"]["pairwise_model"]["args"]["weights"] == "vits16_dino"  # a zoo name
    assert fixed["tags"] == ["data"]
    assert fixed["logger"]["args"]["save_dir"] == "."  # nested: stays in the run folder
