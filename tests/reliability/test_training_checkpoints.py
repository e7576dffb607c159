"""Issue 17, training side: checkpoints are never lost or stale, resume keeps the best, a bad loss stops the run.

Each test failed before the fix it names (OML 0.4.4 behaviour with Lightning's ModelCheckpoint)."""

import copy
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from torch import nn

from oml.lightning.callbacks.checkpoint import AtomicCheckpointIO, NotATrainingCheckpointError
from oml.lightning.pipelines.config_check import expected_metric_names
from oml.lightning.pipelines.train import extractor_training_pipeline
from oml.registry.losses import LOSSES_REGISTRY
from tests.lightning.pipelines.conftest import tiny_train_config


def _load(path: Path) -> Dict[str, Any]:
    return torch.load(path, weights_only=True, map_location="cpu")


def _checkpoint_state(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    (state,) = [value for key, value in ckpt["callbacks"].items() if "RunCheckpoint" in key]
    return state


@pytest.fixture()
def cfg(mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    return tiny_train_config(mock_dataset_root, tmp_path)


def test_last_ckpt_is_the_last_epoch_even_without_a_new_best(cfg: Dict[str, Any], tmp_path: Path) -> None:
    """Finding 1: last.ckpt was rewritten only with a new best; the last epoch (not validated here) was lost."""
    cfg.update({"max_epochs": 3, "valid_period": 2})
    extractor_training_pipeline(cfg)
    last = _load(tmp_path / "checkpoints" / "last.ckpt")
    best = _load(tmp_path / "checkpoints" / "best.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == 9  # 3 steps per epoch
    assert best["epoch"] == 1  # the only validated epoch
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporary files of the atomic writes are left


def test_last_ckpt_is_written_when_a_run_stops_mid_epoch(cfg: Dict[str, Any], tmp_path: Path) -> None:
    """Finding 1, the end of a run: stopped mid-epoch (max_steps, max_time), the final weights were never saved."""
    cfg["lightning_trainer_extra_args"]["max_steps"] = 4  # 3 steps per epoch: stops after a step of epoch 1
    extractor_training_pipeline(cfg)
    assert _load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_resume_into_a_new_folder_keeps_the_best(cfg: Dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    """Finding 2: resumed into a new folder, the best score was forgotten and a worse model became best.ckpt."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    extractor_training_pipeline({**copy.deepcopy(cfg), "max_epochs": 1})
    first = tmp_path / "first" / "checkpoints"
    # the first run's best score is made unbeatable: any later "best" would be a step backwards
    last = _load(first / "last.ckpt")
    _checkpoint_state(last)["best_model_score"] = torch.tensor(1.5)
    torch.save(last, first / "last.ckpt")

    monkeypatch.chdir(tmp_path / "second")
    trainer = extractor_training_pipeline(
        {**copy.deepcopy(cfg), "max_epochs": 3, "ckpt_path": str(first / "last.ckpt")}
    )
    second = tmp_path / "second" / "checkpoints"
    assert float(trainer.checkpoint_callback.best_model_score) == 1.5
    assert Path(trainer.checkpoint_callback.best_model_path) == second / "best.ckpt"
    # the new folder's best.ckpt is the first run's best model, not one of the resumed epochs
    assert (second / "best.ckpt").read_bytes() == (first / "best.ckpt").read_bytes()
    assert _load(second / "last.ckpt")["epoch"] == 2
    assert float(_checkpoint_state(_load(second / "last.ckpt"))["best_model_score"]) == 1.5


class _NanAfter(nn.Module):
    """A loss that becomes NaN after ``steps`` training steps."""

    criterion_name = "nan_after"

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.calls = steps, 0

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = embeddings.pow(2).mean()
        return loss * float("nan") if self.calls > self.steps else loss


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    cfg: Dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 6: a NaN loss kept training (with NaN weights) until the validation."""
    monkeypatch.setitem(LOSSES_REGISTRY, "nan_after", _NanAfter)
    cfg.update({"max_epochs": 3, "criterion": {"name": "nan_after", "args": {"steps": 4}}})
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(FloatingPointError, match=rf"loss is nan at global step 4 \(epoch 1, batch 1\).*{last}"):
        extractor_training_pipeline(cfg)
    saved = _load(last)
    assert saved["epoch"] == 0 and saved["global_step"] == 3
    assert all(torch.isfinite(value).all() for value in saved["state_dict"].values() if value.is_floating_point())


def test_a_plain_state_dict_as_ckpt_path_is_named(cfg: Dict[str, Any], tmp_path: Path) -> None:
    """Finding 10: a state dict as ckpt_path gave KeyError 'pytorch-lightning_version' from inside Lightning."""
    weights = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, weights)
    with pytest.raises(NotATrainingCheckpointError, match=r"weights.pth.*plain state dict of 2 tensors.*extractor"):
        extractor_training_pipeline({**cfg, "ckpt_path": str(weights)})
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_checkpoint_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed while saving left a truncated last.ckpt; now the previous file stays whole."""
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def broken_save(obj: Any, f: Any) -> None:
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(_load(path)["step"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_mode_for_checkpointing_min_for_fnmr(cfg: Dict[str, Any], tmp_path: Path) -> None:
    """Issue 11 item 5: checkpointing on FNMR@FMR kept the worst epoch (the mode was always max)."""
    from oml.demo import read_scalars

    metric = "OVERALL/fnmr@fmr/0.1"
    cfg["metric_args"]["fmr_vals"] = [0.1]
    cfg.update({"max_epochs": 3, "metric_for_checkpointing": metric})
    trainer = extractor_training_pipeline(cfg)
    assert trainer.checkpoint_callback.mode == "min"  # inferred from the name
    values = read_scalars(Path(trainer.logger.log_dir), metric)
    assert len(values) == 3 and min(values) < max(values)
    assert float(trainer.checkpoint_callback.best_model_score) == pytest.approx(min(values))
    assert _load(tmp_path / "checkpoints" / "best.ckpt")["epoch"] == values.index(min(values))
    # the names the config check expects are exactly the ones the validation logs
    logged = {name for name in trainer.callback_metrics if name.startswith("OVERALL/")}
    assert logged == set(expected_metric_names(cfg["metric_args"]))
