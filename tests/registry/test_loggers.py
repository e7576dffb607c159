"""Every logger works offline: hyper-parameters and metrics are written locally and read back."""

import time
from pathlib import Path

import pytest

from oml.lightning.pipelines.parser import initialize_logging
from oml.registry.loggers import get_logger, get_logger_by_cfg

CFG = {"seed": 1, "optimizer": {"name": "adam", "args": {"lr": 0.5}}, "hydra": {"run": {"dir": "x"}}}


def test_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = initialize_logging({**CFG, "logger": {"name": "tensorboard", "args": {"save_dir": str(tmp_path)}}})
    logger.log_metrics({"OVERALL/cmc/1": 0.75}, step=3)
    logger.finalize("success")
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("OVERALL/cmc/1")] == [(3, 0.75)]
    hparams = (Path(logger.log_dir) / "hparams.yaml").read_text()
    assert "optimizer|args|lr: 0.5" in hparams and "hydra" not in hparams


def test_mlflow(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = initialize_logging({**CFG, "logger": {"name": "mlflow", "args": {"tracking_uri": uri}}})
    logger.log_metrics({"OVERALL/cmc/1": 0.5}, step=1)
    logger.finalize("success")
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(logger.run_id)
    assert run.data.params["optimizer/args/lr"] == "0.5" and run.data.metrics["OVERALL/cmc/1"] == 0.5


def test_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ValueError, match="WANDB_API_KEY"):
        get_logger("wandb", project="p")
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = get_logger_by_cfg({"name": "wandb", "args": {"project": "p", "save_dir": str(tmp_path), "offline": True}})
    logger.log_hyperparams({"optimizer|args|lr": 0.5})
    logger.log_metrics({"OVERALL/cmc/1": 0.25})
    run_dir = Path(logger.experiment.dir).parent
    logger.experiment.finish()
    # the offline run's record file; wandb's service may still be writing it after finish()
    deadline = time.monotonic() + 60
    while True:
        records = b"".join(p.read_bytes() for p in run_dir.glob("*.wandb"))
        if (b"optimizer|args|lr" in records and b"OVERALL/cmc/1" in records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert b"optimizer|args|lr" in records and b"OVERALL/cmc/1" in records


def test_neptune_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_MODE", raising=False)
    with pytest.raises(ValueError, match="NEPTUNE_API_TOKEN"):
        get_logger("neptune", project="oml/test")
    monkeypatch.chdir(tmp_path)
    logger = get_logger("neptune", project="oml/test", mode="offline")
    logger.log_hyperparams({"lr": 0.5})
    logger.log_metrics({"cmc": 0.25}, step=0)
    logger.experiment.stop()
    assert any((tmp_path / ".neptune").rglob("*")), "offline neptune writes its data locally"


def test_unknown_logger() -> None:
    with pytest.raises(KeyError, match="tensorboard"):
        get_logger("comet")
