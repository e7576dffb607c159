"""``make demo``: the main job on the built-in mock dataset.

Generates the mock dataset, checks its tables, trains a small extractor on CPU through the training
pipeline (config ``oml/configs/mock_train.yaml``, shipped with the package: a copy of the repository's
``pipelines/mock/train.yaml``, so that ``python -m oml.demo`` runs from an installed oml), prints the
validation metrics per epoch next to those of the untrained model, and saves the best checkpoint and an
image of the worst queries.
"""

import argparse
import os
import time
from pathlib import Path
from typing import Dict, List

import oml.configs
from oml.const import MOCK_DATASET_PATH
from oml.utils.dataframe_format import check_retrieval_dataframe_format
from oml.utils.download_mock_dataset import download_mock_dataset

CONFIG = Path(oml.configs.__file__).parent / "mock_train.yaml"


def compose_config(config: Path, overrides: List[str]) -> Dict:
    """The config as ``oml train`` would see it (Hydra ``defaults`` resolved), as a plain dict."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config.parent.resolve()), version_base="1.1"):
        cfg = compose(config_name=config.stem, overrides=overrides)
    cfg = OmegaConf.to_container(cfg, resolve=False)
    for key in ("hydra", "hydra_dir", "logs_folder"):  # the demo picks its own run folder
        cfg.pop(key, None)
    return cfg


def read_scalars(log_dir: Path, tag: str) -> List[float]:
    """The values of one TensorBoard scalar, in logging order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_root", type=Path, default=MOCK_DATASET_PATH)
    parser.add_argument("--output_dir", type=Path, default=Path("demo_output"))
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. max_epochs=3")
    args = parser.parse_args()
    start = time.perf_counter()

    df_train, df_val = download_mock_dataset(args.dataset_root)
    for name in ("df.csv", "df_with_bboxes.csv", "df_with_category.csv"):
        check_retrieval_dataframe_format(args.dataset_root / name, dataset_root=args.dataset_root)
    print(
        f"Mock dataset in {args.dataset_root}: {len(df_train)} train images ({df_train['label'].nunique()} labels), "
        f"{len(df_val)} validation images ({df_val['label'].nunique()} labels); all 3 tables pass the format check."
    )

    from oml.lightning.pipelines.train import extractor_training_pipeline

    cfg = compose_config(CONFIG, [f"dataset_root={args.dataset_root.resolve()}", *args.overrides])
    cfg["validate_before_training"] = True
    args.output_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.output_dir)
    trainer = extractor_training_pipeline(cfg)

    cmc = read_scalars(Path(trainer.logger.log_dir), "OVERALL/cmc/1")
    period = cfg.get("valid_period", 1)
    print("\nValidation CMC@1 (epoch 0 = before training):")
    for i, value in enumerate(cmc):
        print(f"  after epoch {i * period:3d}: {value:.3f}")
    best = Path(trainer.checkpoint_callback.best_model_path)
    print(f"Best checkpoint: {best.resolve()} (CMC@1 {trainer.checkpoint_callback.best_model_score:.3f})")

    from oml.lightning.callbacks.metric import MetricValCallback

    metric = next(c for c in trainer.callbacks if isinstance(c, MetricValCallback)).metric
    figure = metric.get_plot_for_worst_queries("OVERALL/cmc/1", n_queries=4, n_instances=5)
    figure.savefig("worst_queries.png", dpi=80)
    print(f"Worst queries of the last epoch: {Path('worst_queries.png').resolve()}")
    print(f"Done in {time.perf_counter() - start:.0f} s.")
    if cmc[-1] <= cmc[0]:
        raise SystemExit("Training did not improve CMC@1: something is wrong.")


if __name__ == "__main__":
    main()
