from typing import Any, Dict

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from oml.interfaces.metrics import IBasicMetric
from oml.interfaces.models import IExtractor
from oml.lightning.callbacks.metric import MetricValCallback
from oml.lightning.modules.extractor import ExtractorModule


class Points(Dataset):
    def __init__(self, n: int):
        generator = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 4
        self.x = torch.randn(n, 6, generator=generator) + 3 * nn.functional.one_hot(self.labels, 6).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        return {"input_tensors": self.x[idx], "labels": self.labels[idx], "idx": idx}


class Linear(IExtractor):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    @property
    def feat_dim(self) -> int:
        return 3


class CentroidLoss(nn.Module):
    criterion_name = "centroid"

    def __init__(self):
        super().__init__()
        self.last_logs: Dict[str, float] = {}

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = embeddings.pow(2).mean()
        self.last_logs = {"mean_norm": float(embeddings.detach().norm(dim=1).mean())}
        return loss


class CountingMetric(IBasicMetric):
    """Counts the samples it saw and checks that each arrived exactly once."""

    def setup(self, num_samples: int) -> None:
        self.num_samples, self.ids = num_samples, []

    def update_data(self, data: Dict[str, Any]) -> None:
        assert data["embeddings"].shape[1] == 3
        self.ids.extend(data["idx"].tolist())

    def compute_metrics(self) -> Dict[str, Any]:
        return {"OVERALL": {"seen": {1: float(len(set(self.ids)) == len(self.ids) == self.num_samples)}}}


def _trainer(**kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **kwargs,
    )


@pytest.mark.parametrize("drop_last", [False, True])
def test_training_logs_and_metric_callback(drop_last: bool) -> None:
    extractor = Linear()
    module = ExtractorModule(extractor, CentroidLoss(), torch.optim.SGD(extractor.parameters(), lr=0.1))
    callback = MetricValCallback(CountingMetric())
    trainer = _trainer(callbacks=[callback])
    train = DataLoader(Points(20), batch_size=4)
    val = DataLoader(Points(11), batch_size=4, drop_last=drop_last)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    logged = trainer.logged_metrics
    assert logged["OVERALL/seen/1"] == 1.0
    assert {"centroid_loss_epoch", "mean_norm_epoch", "lr"} <= set(logged)
    assert callback.metric.num_samples == (8 if drop_last else 11)


def test_too_few_samples_is_an_error() -> None:
    module = ExtractorModule(Linear())
    trainer = _trainer(callbacks=[MetricValCallback(CountingMetric())], limit_val_batches=1)
    with pytest.raises(ValueError, match="expected to give 11 samples, but 4 arrived"):
        trainer.validate(module, DataLoader(Points(11), batch_size=4))


def test_module_argument_checks() -> None:
    with pytest.raises(ValueError, match="needs an optimizer"):
        ExtractorModule(Linear(), scheduler=object())
    with pytest.raises(TypeError, match="IFreezable"):
        ExtractorModule(Linear(), freeze_n_epochs=2)
