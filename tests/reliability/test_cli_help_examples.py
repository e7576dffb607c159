"""Issue 17, finding 9: every example of ``oml --help`` exists and runs; every logger writes inside the run folder."""

import json
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from oml.cli import get_parser, main
from oml.const import PROJECT_ROOT

# appended to each example: fewer epochs, smaller images (the examples themselves are run as written)
FASTER: Dict[str, List[str]] = {
    "train": [
        "max_epochs=1",
        "valid_period=1",
        "transforms_train.args.im_size=32",
        "transforms_val.args.im_size=32",
        "+lightning_trainer_extra_args.enable_progress_bar=False",
    ],
    "validate": ["transforms_val.args.im_size=32"],
    "predict": ["transforms_predict.args.im_size=32"],
    "train-postprocessor": [
        "max_epochs=1",
        "valid_period=1",
        "embeddings_cache_dir=null",
        "transforms_extraction.args.im_size=32",
        "transforms_train.args.im_size=32",
        "postprocessor.args.transforms.args.im_size=32",
        "+lightning_trainer_extra_args.enable_progress_bar=False",
    ],
}


def help_examples() -> List[List[str]]:
    lines = get_parser().format_help().splitlines()
    return [line.split()[1:] for line in lines if line.strip().startswith("oml ")]


def test_help_examples_name_existing_configs() -> None:
    examples = help_examples()
    assert {example[0] for example in examples} == {"train", "validate", "predict", "train-postprocessor"}
    for example in examples:
        assert (PROJECT_ROOT / example[1]).is_file(), example


@pytest.mark.timeout(600)
def test_help_examples_run(mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mock_dataset").symlink_to(mock_dataset_root)
    (tmp_path / "pipelines").symlink_to(PROJECT_ROOT / "pipelines")
    monkeypatch.chdir(tmp_path)
    run = None
    for command, config, *overrides in help_examples():
        if run is None and any("<run>" in o for o in overrides):
            raise AssertionError("an example uses <run> before a training example made one")
        overrides = [o.replace("<run>", run or "") for o in overrides]
        before = set((tmp_path / "logs").glob("*")) if (tmp_path / "logs").is_dir() else set()
        faster = FASTER[command]
        if any(o.startswith("ckpt_path=") for o in overrides):
            faster = [*faster, "max_epochs=2"]  # one epoch more than the run it resumes
        main([command, config, *overrides, *faster])
        if command == "train" and run is None:
            (folder,) = set((tmp_path / "logs").glob("*_mock")) - before
            run = folder.name
            assert (folder / "checkpoints" / "best.ckpt").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
            # the TensorBoard logs are inside the run folder, not in the folder oml was started in
            assert list((folder / "lightning_logs").glob("version_0/events.out.tfevents.*"))
            assert not (tmp_path / "lightning_logs").exists()
            assert (folder / ".hydra" / "config.yaml").is_file() and not (folder / ".oml_run.lock").exists()
        if command == "train" and any(o.startswith("ckpt_path=") for o in overrides):
            (resumed,) = set((tmp_path / "logs").glob("*_mock")) - before
            # resumed from the first run's last epoch (0) for one more epoch
            assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
            assert (resumed / "checkpoints" / "best.ckpt").is_file()
        if command == "predict":
            predictions = json.loads((tmp_path / "predictions" / "predictions.json").read_text())
            assert len(predictions) == len(list((mock_dataset_root / "images").glob("*.jpg")))
    assert run is not None
