"""Issue 17: a real ``oml train`` killed with SIGKILL mid-epoch resumes to exactly the uninterrupted result."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest
import torch

from oml.const import PROJECT_ROOT
from oml.lightning.pipelines.train import extractor_training_pipeline
from tests.lightning.pipelines.conftest import compose_mock_config

TRAIN_YAML = PROJECT_ROOT / "pipelines" / "mock" / "train.yaml"
# 12 labels / 2 per batch: 6 steps per epoch, validated after each
FAST = [
    "dataset_root=data",
    "max_epochs=2",
    "valid_period=1",
    "sampler.args.n_labels=2",
    "transforms_train.args.im_size=32",
    "transforms_val.args.im_size=32",
    "+lightning_trainer_extra_args.enable_progress_bar=False",
    "+lightning_trainer_extra_args.enable_model_summary=False",
]


def _oml_train(cwd: Path, extra: List[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "oml.cli", "train", str(TRAIN_YAML), *FAST, *extra],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=400)
    assert process.returncode == 0, err[-3000:]
    return out + err


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def _kill_after_first_epoch(process: subprocess.Popen, last: Path) -> None:
    deadline = time.monotonic() + 400
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the steps of epoch 1
    process.send_signal(signal.SIGKILL)


def _best_score(checkpoint: Path) -> float:
    states = _load(checkpoint)["callbacks"]
    return float(next(state for key, state in states.items() if "RunCheckpoint" in key)["best_model_score"])


@pytest.mark.timeout(600)
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(
    mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").symlink_to(mock_dataset_root)
    killed = _oml_train(tmp_path, ["logs_folder=killed"])
    killed_dir = tmp_path / "logs" / "killed"
    watcher = threading.Thread(target=_kill_after_first_epoch, args=(killed, killed_dir / "checkpoints" / "last.ckpt"))
    watcher.start()

    # meanwhile the uninterrupted run, in this process (one torch start-up less), with the same config
    straight_dir = tmp_path / "straight"
    straight_dir.mkdir()
    monkeypatch.chdir(straight_dir)
    cfg = compose_mock_config("train", [*FAST[1:], f"dataset_root={mock_dataset_root}"])
    extractor_training_pipeline({**cfg, "lightning_trainer_extra_args": {"enable_progress_bar": False}})
    monkeypatch.chdir(tmp_path)

    watcher.join()
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert _load(killed_dir / "checkpoints" / "last.ckpt")["epoch"] == 0, "killed too late: not in epoch 1"
    assert (killed_dir / ".oml_run.lock").exists()  # the killed run's lock is left behind

    # resume in the killed run's folder: its stale lock is taken over
    log = _finish(_oml_train(tmp_path, ["logs_folder=killed", "ckpt_path=logs/killed/checkpoints/last.ckpt"]))
    assert "Taking over the run folder" in log and "no longer running" in log

    for name in ("last.ckpt", "best.ckpt"):
        expected = _load(straight_dir / "checkpoints" / name)
        resumed = _load(killed_dir / "checkpoints" / name)
        assert (resumed["epoch"], resumed["global_step"]) == (expected["epoch"], expected["global_step"]), name
        assert resumed["state_dict"].keys() == expected["state_dict"].keys()
        for key, value in expected["state_dict"].items():
            torch.testing.assert_close(resumed["state_dict"][key], value, msg=f"{name}: {key}")
    assert _best_score(killed_dir / "checkpoints" / "last.ckpt") == _best_score(
        straight_dir / "checkpoints" / "last.ckpt"
    )
    assert not (killed_dir / ".oml_run.lock").exists()  # released at the end
