"""``extractor_prediction_pipeline``: embed every image of a folder and save ``predictions.json``."""

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from oml.const import IMAGE_EXTENSIONS, TCfg
from oml.datasets.list_dataset import ListDataset
from oml.lightning.modules.extractor import ExtractorModule
from oml.lightning.pipelines.config_check import check_config
from oml.lightning.pipelines.parser import (
    ConfigError,
    check_is_config_for_ddp,
    parse_engine_params_from_config,
    parse_precision,
)
from oml.registry.models import get_extractor_by_cfg
from oml.registry.transforms import get_transforms_by_cfg
from oml.transforms.images.utils import get_im_reader_for_transforms
from oml.utils.images.images import find_broken_images


class _ShardWriter(BasePredictionWriter):
    """Every process saves the embeddings of its share with their dataset indices; the main process merges them."""

    def __init__(self, folder: Path):
        super().__init__(write_interval="epoch")
        self.folder = folder

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        ids = torch.cat([batch["idx"] for batch in predictions]) if predictions else torch.empty(0, dtype=torch.long)
        embeddings = torch.cat([batch["embeddings"].float().cpu() for batch in predictions]) if predictions else None
        torch.save({"ids": ids, "embeddings": embeddings}, self.folder / f"shard_{trainer.global_rank}.pt")


def find_images(data_dir: Path) -> List[Path]:
    """Every image below ``data_dir`` with an extension of ``IMAGE_EXTENSIONS``, sorted."""
    return sorted(p for p in Path(data_dir).rglob("*") if p.is_file() and p.suffix.lstrip(".") in IMAGE_EXTENSIONS)


def extractor_prediction_pipeline(cfg: TCfg) -> Dict[str, List[float]]:
    """Embed the images found in ``data_dir`` and write ``save_dir/predictions.json`` (``{path: embedding}``).

    Broken images are refused up front with the list of them. Works with several processes (each
    image is embedded once). Returns the predictions.
    """
    cfg = check_config(cfg, "predict")
    engine_params = parse_engine_params_from_config(cfg)
    transforms = get_transforms_by_cfg(cfg["transforms_predict"])
    paths = find_images(Path(cfg["data_dir"]))
    if not paths:
        raise ConfigError(f"No images with extensions {IMAGE_EXTENSIONS} were found in data_dir={cfg['data_dir']!r}.")
    broken = find_broken_images(paths, get_im_reader_for_transforms(transforms), num_processes=cfg["num_workers"] or 1)
    if broken:
        listed = "\n".join(f"  {p}" for p in broken)
        raise ValueError(f"{len(broken)} images cannot be read; remove or fix them first:\n{listed}")

    save_dir = Path(cfg["save_dir"])
    save_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(
        ListDataset(paths, transform=transforms), batch_size=cfg["bs"], num_workers=cfg["num_workers"], shuffle=False
    )
    if check_is_config_for_ddp(engine_params):
        from oml.lightning.modules.extractor import ExtractorModuleDDP

        module: ExtractorModule = ExtractorModuleDDP(
            extractor=get_extractor_by_cfg(cfg["extractor"]), loaders_val=loader
        )
        module.predict_dataloader = module.val_dataloader  # type: ignore[method-assign]
        dataloaders = None
    else:
        module, dataloaders = ExtractorModule(extractor=get_extractor_by_cfg(cfg["extractor"])), loader
    trainer = pl.Trainer(
        callbacks=[_ShardWriter(save_dir)],
        precision=parse_precision(cfg.get("precision", 32), engine_params["accelerator"]),
        logger=False,
        **engine_params,
    )
    trainer.predict(model=module, dataloaders=dataloaders, return_predictions=False)
    if not trainer.is_global_zero:
        return {}

    shards = sorted(save_dir.glob("shard_*.pt"))
    embeddings = torch.full((len(paths), 0), 0.0)
    for shard_path in shards:
        shard = torch.load(shard_path, weights_only=True)
        if shard["embeddings"] is not None:
            if embeddings.shape[1] == 0:
                embeddings = torch.full((len(paths), shard["embeddings"].shape[1]), float("nan"))
            embeddings[shard["ids"]] = shard["embeddings"]
        shard_path.unlink()
    if embeddings.shape[1] == 0 or torch.isnan(embeddings).any():
        raise RuntimeError("Some images got no embedding: the processes did not cover the whole folder.")
    predictions = {str(path): embedding.tolist() for path, embedding in zip(paths, embeddings)}
    (save_dir / "predictions.json").write_text(json.dumps(predictions))
    return predictions


__all__ = ["extractor_prediction_pipeline", "find_images"]
