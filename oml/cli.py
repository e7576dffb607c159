"""The ``oml`` command: run a pipeline from a YAML config with Hydra-style ``key=value`` overrides.

Examples (on the generated mock dataset: python -m oml.utils.download_mock_dataset --dataset_root mock_dataset)::

    oml train pipelines/mock/train.yaml dataset_root=mock_dataset max_epochs=3 optimizer.args.lr=1e-4
    oml validate pipelines/mock/validate.yaml extractor_weights=logs/<run>/checkpoints/best.ckpt
    oml predict pipelines/mock/predict.yaml data_dir=mock_dataset/images save_dir=predictions
    oml train-postprocessor pipelines/mock/train_postprocessor.yaml dataset_root=mock_dataset
    oml train pipelines/mock/train.yaml dataset_root=mock_dataset ckpt_path=logs/<run>/checkpoints/last.ckpt

Hydra composes the config (``defaults:`` may pull packaged blocks such as ``optimizer: adam`` from
``oml/configs``), creates the run folder given by ``hydra.run.dir`` and runs the pipeline there. The config is
checked before anything runs (unknown keys, types), and a run folder used by another live run is refused.
Relative paths (``dataset_root``, ``data_dir``, ``save_dir``, ``ckpt_path``, weights files) are taken from the folder
``oml`` is started in.
"""

import argparse
import contextlib
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from oml.const import HYDRA_VERSION

# command -> (module, function, help)
COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "train": ("train", "extractor_training_pipeline", "train an extractor"),
    "validate": ("validate", "extractor_validation_pipeline", "compute retrieval metrics of an extractor"),
    "predict": ("predict", "extractor_prediction_pipeline", "embed every image of a folder into predictions.json"),
    "train-postprocessor": (
        "train_postprocessor",
        "postprocessor_training_pipeline",
        "train a pairwise re-ranking model (postprocessor)",
    ),
}


def get_pipeline(command: str) -> Callable:
    """The pipeline function of a command (only its module is imported)."""
    module, function, _ = COMMANDS[command]
    return getattr(importlib.import_module(f"oml.lightning.pipelines.{module}"), function)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oml", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, (_, function, help_text) in COMMANDS.items():
        sub = commands.add_parser(command, help=help_text, description=f"{help_text} ({function})")
        sub.add_argument("config", type=Path, help="path to the YAML config")
        sub.add_argument("overrides", nargs="*", help="Hydra overrides such as max_epochs=3 or +new_key=1")
    add_convert_command(commands)
    return parser


def add_convert_command(commands: Any) -> None:
    """``oml convert {cub,cars,sop,inshop} DATASET_ROOT [--protocol P]``: write the oml tables of a benchmark."""
    from oml.datasets.converters import CONVERTERS, PROTOCOLS

    defaults = ", ".join(f"{name}: {protocols[0]}" for name, (_, protocols) in CONVERTERS.items())
    sub = commands.add_parser(
        "convert",
        help="write the oml tables (df.csv, ...) of CUB, Cars196, SOP or InShop from their published folder",
        description=(
            "Convert a benchmark's published folder into the oml tables, written into DATASET_ROOT. Protocols: "
            + "; ".join(f"{name}: {text}" for name, text in PROTOCOLS.items())
            + f". Defaults: {defaults}."
        ),
    )
    sub.add_argument("dataset", choices=sorted(CONVERTERS), help="the benchmark")
    sub.add_argument("dataset_root", type=Path, help="its folder as downloaded (e.g. CUB_200_2011/)")
    sub.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None, help="the split protocol")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")


def run_convert(args: argparse.Namespace) -> None:
    """Run the converter chosen on the command line and print its summary; bad input exits with its message."""
    from oml.datasets.converters import CONVERTERS

    converter, protocols = CONVERTERS[args.dataset]
    try:
        summary = converter(args.dataset_root, protocol=args.protocol or protocols[0], verbose=not args.quiet)
    except (ValueError, OSError) as e:  # RawDataError, a protocol, an unwritable folder: the message, no traceback
        raise SystemExit(f"oml convert {args.dataset}: {e}") from e
    print(summary)


# top-level keys that hold paths: relative ones are meant from where ``oml`` was started
PATH_KEYS = ("dataset_root", "data_dir", "save_dir", "embeddings_cache_dir", "ckpt_path")


def absolutise_paths(cfg: Any, original_cwd: Path, top_level: bool = True) -> Any:
    """Make the config's relative paths absolute against ``original_cwd``.

    Hydra runs the pipeline inside the run folder, so ``dataset_root=mock_dataset`` would otherwise
    point into it. ``PATH_KEYS`` are top-level keys only: a nested ``save_dir`` (e.g. a logger's
    ``save_dir: "."``) stays relative to the run folder, so the logs land inside it. Any ``weights``
    value that names an existing file relative to ``original_cwd`` (e.g.
    ``extractor.args.weights=checkpoints/best.ckpt``) is made absolute too; zoo names and
    interpolations (``${...}``) are left alone.
    """
    if isinstance(cfg, dict):
        fixed = {}
        for key, value in cfg.items():
            relative = isinstance(value, str) and value != "" and "${" not in value and not Path(value).is_absolute()
            if relative and (
                (top_level and key in PATH_KEYS) or (key.endswith("weights") and (original_cwd / value).is_file())
            ):
                value = str(original_cwd / value)
            fixed[key] = absolutise_paths(value, original_cwd, top_level=False)
        return fixed
    if isinstance(cfg, list):
        return [absolutise_paths(value, original_cwd, top_level=False) for value in cfg]
    return cfg


def _quote_override(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resolve_run_folder(config: Path, overrides: List[str]) -> Optional[Path]:
    """The run folder (``hydra.run.dir``) the config and overrides give, resolved now (``${now:...}`` included).

    None if Hydra cannot compose the config here: ``hydra.main`` then reports the problem itself.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(config_dir=str(config.resolve().parent), version_base=HYDRA_VERSION):
            cfg = compose(config_name=config.stem, overrides=overrides, return_hydra_config=True)
        run_dir = OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - any composition problem is reported by hydra.main with its own message
        return None
    return Path(str(run_dir)) if run_dir else None


def run_pipeline(pipeline: Callable, config: Path, overrides: List[str]) -> None:
    """Run ``pipeline`` through ``hydra.main`` with the config's folder as the config path.

    The run folder is resolved first and locked (``lock_run_folder``) before Hydra writes into it, so a
    second run into the folder of a live run stops before touching its files.
    """
    import hydra
    from omegaconf import OmegaConf

    from oml.lightning.pipelines.run_folder import RunFolderBusyError, lock_run_folder

    if not config.is_file():
        raise SystemExit(f"oml: the config file {config} does not exist.")
    original_cwd = Path.cwd()

    def job(cfg: Any) -> Any:
        # unresolved, so that the config check sees which keys feed interpolations (e.g. ${extractor_weights})
        return pipeline(absolutise_paths(OmegaConf.to_container(cfg, resolve=False), original_cwd))

    runner = hydra.main(config_path=str(config.resolve().parent), config_name=config.stem, version_base=HYDRA_VERSION)(
        job
    )
    run_folder = resolve_run_folder(config, overrides)
    if run_folder is not None:
        overrides = [o for o in overrides if not o.startswith("hydra.run.dir=")]
        overrides.append(f"hydra.run.dir={_quote_override(str(run_folder))}")
    saved_argv = sys.argv
    sys.argv = [f"oml {config}", *overrides]
    try:
        with lock_run_folder(run_folder) if run_folder is not None else contextlib.nullcontext():
            runner()
    except RunFolderBusyError as e:
        raise SystemExit(f"oml: {e}") from None
    finally:
        sys.argv = saved_argv


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if args.command == "convert":
        return run_convert(args)
    run_pipeline(get_pipeline(args.command), args.config, args.overrides)


if __name__ == "__main__":
    main()
