"""Checkpoints of a training run that are never lost: ``last.ckpt`` after every epoch, ``best.ckpt`` that never
goes backwards (also when a run is resumed into a new folder), atomic files, and a stop on a non-finite loss.

OML 0.4.4 used Lightning's ``ModelCheckpoint(save_last=True)``, which rewrites ``last.ckpt`` only when a new
best is saved (so a killed run lost every epoch since its best one), and forgets the best score when a run is
resumed into another folder (so a worse model became the new folder's ``best.ckpt``). ``RunCheckpoint`` fixes
both; ``AtomicCheckpointIO`` writes every checkpoint through :func:`oml.utils.io.atomic_write`, so a run killed
while saving leaves the previous file intact, and reads ``ckpt_path`` with
:func:`oml.models.checkpoint.load_checkpoint` (``weights_only``) with a clear error for files that are not
Lightning checkpoints.
"""

import math
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from oml.models.checkpoint import load_checkpoint
from oml.utils.io import atomic_write

TPath = Union[str, Path]

BEST_NAME = "best.ckpt"
LAST_NAME = "last.ckpt"
# entries every checkpoint written by ``Trainer.save_checkpoint`` has (a plain state dict has none of them)
LIGHTNING_KEYS = ("pytorch-lightning_version", "state_dict", "loops")


class NotATrainingCheckpointError(ValueError):
    """``ckpt_path`` names a file that cannot resume a run (e.g. a plain state dict)."""


def read_training_checkpoint(path: TPath) -> Dict[str, Any]:
    """Read a Lightning checkpoint to resume from; the file is verified by ``load_checkpoint`` (``weights_only``).

    Raises:
        NotATrainingCheckpointError: the file holds something else (a plain state dict, a tensor, ...); the
            message names the file, what it holds and what to use instead.
    """
    content = load_checkpoint(path)
    if isinstance(content, dict):
        missing = [key for key in LIGHTNING_KEYS if key not in content]
        if not missing:
            return content
        what = f"a dict with the keys {sorted(map(str, content))[:8]}"
        if all(isinstance(value, torch.Tensor) for value in content.values()):
            what = f"a plain state dict of {len(content)} tensors"
    else:
        what = f"a {type(content).__name__}"
    raise NotATrainingCheckpointError(
        f"ckpt_path={str(path)!r} is not a Lightning checkpoint of a training run: it holds {what}, without "
        f"{list(LIGHTNING_KEYS)}. ckpt_path resumes a run from its checkpoints/last.ckpt (or best.ckpt); to start "
        f"a new run from these weights, give the file as `extractor.args.weights` instead."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic writes and ``weights_only`` reads (see the module doc).

    Args:
        resume_path: the ``ckpt_path`` a run resumes from: reading it checks that it is a Lightning checkpoint
            (other reads, e.g. the weights ``ddp_spawn`` hands back to the main process, are plain).
    """

    def __init__(self, resume_path: Optional[TPath] = None):
        super().__init__()
        self.resume_path = None if resume_path is None else Path(resume_path).resolve()

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: TPath, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}.")
        with atomic_write(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: TPath, map_location: Optional[Callable] = None, weights_only: Optional[bool] = None
    ) -> Dict[str, Any]:
        if weights_only is False:
            raise ValueError("Checkpoints are read with weights_only=True only (a pickle could run code).")
        if self.resume_path is not None and Path(path).resolve() == self.resume_path:
            return read_training_checkpoint(path)
        return load_checkpoint(path)


def infer_checkpoint_mode(metric: str) -> str:
    """``"min"`` for metrics that are better when lower (FNMR@FMR, losses), ``"max"`` otherwise."""
    lowered = metric.lower()
    return "min" if "fnmr" in lowered or lowered.split("/")[-1].endswith(("loss", "loss_epoch")) else "max"


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` by ``monitor`` and ``last.ckpt`` of a training run, in ``dirpath``.

    * ``last.ckpt`` is written at the end of every training epoch (after its validation) and at the end of
      ``fit`` (e.g. when ``max_time`` stops a run mid-epoch), so a killed run loses at most one epoch.
    * ``best.ckpt`` is written when a validation gives a strictly better ``monitor`` value (``mode`` max or
      min); NaN never counts as better.
    * On resume the best score and path come back from the checkpoint even if ``dirpath`` changed (a new run
      folder): the old ``best.ckpt`` is copied into the new folder, so ``best.ckpt`` never goes backwards.
    * Nothing is saved when training raises (e.g. a non-finite loss): the last good ``last.ckpt`` stays.

    It is a ``ModelCheckpoint``, so ``trainer.checkpoint_callback.best_model_path / best_model_score`` work.
    """

    def __init__(self, dirpath: TPath, monitor: str, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        super().__init__(
            dirpath=str(dirpath),
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=True,
            filename="best",
            verbose=True,
            enable_version_counter=False,
        )
        self._last_saved_step: Optional[int] = None
        self._inherited_best: Optional[Path] = None

    @property
    def best_path(self) -> Path:
        return Path(str(self.dirpath)) / BEST_NAME

    @property
    def last_path(self) -> Path:
        return Path(str(self.dirpath)) / LAST_NAME

    def _is_fitting(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run

    def improves(self, score: float) -> bool:
        """Whether ``score`` beats the best one so far (strictly; NaN never does)."""
        if math.isnan(score):
            return False
        if self.best_model_score is None:
            return True
        best = float(self.best_model_score)
        return score > best if self.mode == "max" else score < best

    # ------------------------------------------------------------------------------------------- hooks
    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """No step-based saving."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._inherited_best is None:
            return
        # resumed into a new folder: the best checkpoint so far becomes this folder's best.ckpt
        if trainer.is_global_zero:
            with atomic_write(self.best_path) as tmp:
                shutil.copyfile(self._inherited_best, tmp)
            rank_zero_info(f"Copied the best checkpoint so far {self._inherited_best} to {self.best_path}.")
        trainer.strategy.barrier("RunCheckpoint.copy_best")
        self.best_model_path = str(self.best_path)
        self._inherited_best = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._is_fitting(trainer):
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(
                f"metric_for_checkpointing={self.monitor!r} was not logged by the validation; logged metrics: "
                f"{sorted(trainer.callback_metrics)}."
            )
        score = float(value)
        self.current_score = torch.tensor(score)
        if not self.improves(score):
            best = "none" if self.best_model_score is None else f"{float(self.best_model_score):.6g}"
            rank_zero_info(
                f"Epoch {trainer.current_epoch}: {self.monitor}={score:.6g} is not better than the best {best} "
                f"({self.mode})."
            )
            return
        self.best_model_score = torch.tensor(score)
        self.best_model_path = str(self.best_path)
        self.best_k_models = {self.best_model_path: self.best_model_score}
        self.kth_best_model_path, self.kth_value = self.best_model_path, self.best_model_score
        self._save_checkpoint(trainer, self.best_model_path)
        rank_zero_info(f"Epoch {trainer.current_epoch}: {self.monitor}={score:.6g} is the best so far: saved it.")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._is_fitting(trainer):
            self._save_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.fast_dev_run and self._last_saved_step != trainer.global_step:
            self._save_last(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Keep the last good checkpoint: the state at an exception may be broken (e.g. NaN weights)."""

    def _save_last(self, trainer: pl.Trainer) -> None:
        self.last_model_path = str(self.last_path)
        self._save_checkpoint(trainer, self.last_model_path)
        self._last_saved_step = trainer.global_step

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "last_model_path": self.last_model_path,
            "dirpath": self.dirpath,
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.best_model_score = state_dict.get("best_model_score")
        old_best = state_dict.get("best_model_path") or ""
        self.best_model_path = old_best
        if self.best_model_score is not None:
            self.best_k_models = {old_best: self.best_model_score}
            self.kth_best_model_path, self.kth_value = old_best, self.best_model_score
        if not old_best or Path(old_best).resolve() == self.best_path.resolve():
            return
        if Path(old_best).is_file():
            self._inherited_best = Path(old_best)
        else:
            rank_zero_warn(
                f"The run being resumed had its best checkpoint at {old_best}, which no longer exists: the best score "
                f"{self.best_model_score} is kept, and {self.best_path} is written only when a model beats it."
            )


class NonFiniteLossStop(Callback):
    """Stop training at the first NaN or infinite loss, naming the step and the last good checkpoint.

    Raised before the backward pass, so the weights are not touched by the broken step and no checkpoint of
    them is written (``RunCheckpoint`` saves nothing on an exception).
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved before it"
        raise FloatingPointError(
            f"The training loss is {loss.detach().flatten()[:1].item()} at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}): training stopped; "
            f"{kept}. Lower the learning rate, check the inputs, or use precision 32."
        )


__all__ = [
    "AtomicCheckpointIO",
    "NonFiniteLossStop",
    "NotATrainingCheckpointError",
    "RunCheckpoint",
    "infer_checkpoint_mode",
    "read_training_checkpoint",
]
