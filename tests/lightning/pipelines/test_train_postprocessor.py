"""PairwiseModule and postprocessor_training_pipeline on the mock dataset with tiny models (CPU)."""

import copy
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from torch.nn import BCEWithLogitsLoss

import oml.inference.flat as flat
from oml.const import PROJECT_ROOT
from oml.demo import compose_config
from oml.lightning.modules.pairwise_postprocessing import PairwiseModule
from oml.lightning.pipelines.parser import ConfigError
from oml.lightning.pipelines.train_postprocessor import (
    get_hash_of_extraction_stage_cfg,
    postprocessor_training_pipeline,
)
from oml.lightning.pipelines.validate import extractor_validation_pipeline
from oml.miners.pairs import PairsMiner
from oml.models.meta.siamese import ConcatSiamese, LinearTrivialDistanceSiamese
from oml.models.timm_extractor import TimmExtractor
from tests.inference.helpers import TinyExtractor

MOCK = PROJECT_ROOT / "pipelines" / "mock"
METRIC = "OVERALL/cmc/1"


def compose(name: str, overrides: List[str]) -> Dict[str, Any]:
    """A mock config as the ``oml`` command sees it (defaults and interpolations resolved), without ``hydra``."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.create(compose_config(MOCK / f"{name}.yaml", overrides)), resolve=True)


def test_pairwise_module_step() -> None:
    torch.manual_seed(0)
    model = ConcatSiamese(TinyExtractor(), mlp_hidden_dims=[4])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    module = PairwiseModule(model, PairsMiner(hard_mining=False), BCEWithLogitsLoss(), optimizer)
    module.log = lambda *args, **kwargs: None  # outside of a Trainer
    batch = {
        "input_tensors": torch.randn(6, 3, 16, 16),
        "labels": torch.tensor([0, 0, 1, 1, 2, 2]),
        "embeddings": torch.randn(6, 4),
    }
    assert torch.isfinite(module.training_step(batch, 0))  # train mode (dropout on)
    ids1, ids2, is_negative = PairsMiner(hard_mining=False).sample(batch["embeddings"], batch["labels"])
    model.eval()  # dropout off for the comparison
    module.eval()
    loss = module.training_step(batch, 0)
    expected = BCEWithLogitsLoss()(
        model(batch["input_tensors"][ids1], batch["input_tensors"][ids2]), is_negative.float()
    )
    assert torch.allclose(loss, expected) and loss.requires_grad
    loss.backward()
    assert model.head[0].weight.grad is not None
    assert module.validation_step(batch, 0) is batch
    with pytest.raises(TypeError, match="IFreezable"):
        PairwiseModule(
            LinearTrivialDistanceSiamese(4, True), PairsMiner(), BCEWithLogitsLoss(), optimizer, freeze_n_epochs=1
        )
    with pytest.raises(ValueError, match="No pairs were mined"):
        module.training_step({**batch, "labels": torch.arange(6)}, 0)


def test_hash_of_extraction_stage() -> None:
    cfg = {
        "extractor": {"name": "a", "args": {"x": 1, "y": 2}},
        "transforms_extraction": {},
        "dataframe_name": "df.csv",
    }
    reordered = {
        "dataframe_name": "df.csv",
        "transforms_extraction": {},
        "extractor": {"args": {"y": 2, "x": 1}, "name": "a"},
    }
    assert get_hash_of_extraction_stage_cfg(cfg) == get_hash_of_extraction_stage_cfg(reordered)
    assert get_hash_of_extraction_stage_cfg(cfg) != get_hash_of_extraction_stage_cfg({**cfg, "precision": 16})
    assert len(get_hash_of_extraction_stage_cfg(cfg)) == 32


@pytest.fixture()
def cfg(mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    """The mock config with a saved (random) extractor checkpoint, 2 short epochs, logs in tmp_path."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save(TimmExtractor(weights=None, arch="resnet10t").model.state_dict(), tmp_path / "extractor.pth")
    return compose(
        "train_postprocessor",
        [
            f"dataset_root={mock_dataset_root}",
            f"extractor_weights={tmp_path / 'extractor.pth'}",
            f"embeddings_cache_dir={tmp_path / 'cache'}",
            "max_epochs=2",
            "valid_period=1",
            "freeze_n_epochs=1",
            "postprocessor.args.top_n=3",
            f"logger.args.save_dir={tmp_path}",
            "+lightning_trainer_extra_args={enable_progress_bar: False, enable_model_summary: False}",
        ],
    )


def test_pipeline_end_to_end(cfg: Dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = flat.inference_on_images
    monkeypatch.setattr(flat, "inference_on_images", lambda *a, **k: calls.append(1) or real(*a, **k))

    trainer = postprocessor_training_pipeline(copy.deepcopy(cfg))
    cache = tmp_path / "cache" / f"embeddings_{get_hash_of_extraction_stage_cfg(cfg)[:5]}.pkl"
    assert cache.is_file() and len(calls) == 1
    assert torch.load(cache, weights_only=True)["embeddings"].shape == (144, 512)  # a safe format
    best = Path(trainer.checkpoint_callback.best_model_path)
    assert best.name == "best.ckpt" and best.is_file()
    best_score = float(trainer.checkpoint_callback.best_model_score)
    assert 0 < best_score <= 1
    assert {"loss_epoch", METRIC} <= set(trainer.callback_metrics)

    # the re-ranker of the best checkpoint gives the same metrics in the validation pipeline
    val_cfg = compose(
        "validate_with_postprocessor",
        [
            f"dataset_root={cfg['dataset_root']}",
            f"extractor_weights={cfg['extractor']['args']['weights']}",
            f"postprocessor_weights={best}",
            "postprocessor.args.top_n=3",
        ],
    )
    _, logs = extractor_validation_pipeline(val_cfg)
    assert logs[METRIC] == pytest.approx(best_score, abs=1e-6)
    without = dict(val_cfg, postprocessor=None)
    _, logs_plain = extractor_validation_pipeline(without)
    assert logs_plain["OVERALL/cmc/5"] == pytest.approx(logs["OVERALL/cmc/5"])  # the top-5 set is not changed

    (tmp_path / "again").mkdir()
    monkeypatch.chdir(tmp_path / "again")
    postprocessor_training_pipeline(dict(copy.deepcopy(cfg), max_epochs=1))  # the cache is used
    assert len(calls) == 1


def test_pipeline_config_errors(cfg: Dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="needs a `sampler`"):
        postprocessor_training_pipeline(dict(cfg, sampler=None))
    embeddings_pp = {
        "name": "pairwise_embeddings",
        "args": {
            "top_n": 3,
            "num_workers": 0,
            "batch_size": 8,
            "pairwise_model": {"name": "linear_siamese", "args": {"feat_dim": 512, "identity_init": True}},
        },
    }
    with pytest.raises(ConfigError, match="must be 'pairwise_images'"):
        postprocessor_training_pipeline(dict(cfg, postprocessor=embeddings_pp))
    with pytest.raises(ConfigError, match=r"misses the required keys \['transforms_extraction'\]"):
        postprocessor_training_pipeline({k: v for k, v in cfg.items() if k != "transforms_extraction"})


@pytest.mark.ddp
@pytest.mark.timeout(300)
def test_pipeline_with_two_processes(cfg: Dict[str, Any], tmp_path: Path) -> None:
    """2 CPU processes (ddp_spawn over gloo): training runs, and the metrics with re-ranking computed under DDP
    (each pair scored once, results gathered) equal the single-process validation of the saved re-ranker."""
    cfg.update({"devices": 2, "max_epochs": 1, "embeddings_cache_dir": None})
    trainer = postprocessor_training_pipeline(cfg)
    best = tmp_path / "checkpoints" / "best.ckpt"
    assert best.is_file()
    ddp_score = float(trainer.callback_metrics[METRIC])
    val_cfg = compose(
        "validate_with_postprocessor",
        [
            f"dataset_root={cfg['dataset_root']}",
            f"extractor_weights={cfg['extractor']['args']['weights']}",
            f"postprocessor_weights={best}",
            "postprocessor.args.top_n=3",
        ],
    )
    _, logs = extractor_validation_pipeline(val_cfg)
    assert logs[METRIC] == pytest.approx(ddp_score, abs=1e-6)
