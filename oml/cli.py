"""The ``oml`` command: run a pipeline from a YAML config with Hydra-style ``key=value`` overrides.

Examples::

    oml train pipelines/mock/train.yaml max_epochs=3 optimizer.args.lr=1e-4
    oml validate pipelines/mock/validate.yaml extractor.args.weights=checkpoints/best.ckpt
    oml predict pipelines/mock/predict.yaml data_dir=my_images/
    oml train-postprocessor pipelines/mock/train_postprocessor.yaml

Hydra composes the config (``defaults:`` may pull packaged blocks such as ``optimizer: adam`` from
``oml/configs``), creates the run folder given by ``hydra.run.dir`` and runs the pipeline there.
"""

import argparse
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


def absolutise_paths(cfg: Any, original_cwd: Path) -> Any:
    """Make the config's relative paths absolute against ``original_cwd``.

    Hydra runs the pipeline inside the run folder, so ``dataset_root=mock_dataset`` would otherwise
    point into it. Besides ``PATH_KEYS``, any ``weights`` value that names an existing file relative
    to ``original_cwd`` (e.g. ``extractor.args.weights=checkpoints/best.ckpt``) is made absolute too;
    zoo names are left alone.
    """
    if isinstance(cfg, dict):
        fixed = {}
        for key, value in cfg.items():
            relative = isinstance(value, str) and value != "" and not Path(value).is_absolute()
            if relative and (key in PATH_KEYS or (key.endswith("weights") and (original_cwd / value).is_file())):
                value = str(original_cwd / value)
            fixed[key] = absolutise_paths(value, original_cwd)
        return fixed
    if isinstance(cfg, list):
        return [absolutise_paths(value, original_cwd) for value in cfg]
    return cfg


def run_pipeline(pipeline: Callable, config: Path, overrides: List[str]) -> None:
    """Run ``pipeline`` through ``hydra.main`` with the config's folder as the config path."""
    import hydra

    from oml.utils.misc import dictconfig_to_dict

    if not config.is_file():
        raise SystemExit(f"oml: the config file {config} does not exist.")
    original_cwd = Path.cwd()

    def job(cfg: Any) -> Any:
        return pipeline(absolutise_paths(dictconfig_to_dict(cfg), original_cwd))

    runner = hydra.main(config_path=str(config.resolve().parent), config_name=config.stem, version_base=HYDRA_VERSION)(
        job
    )
    saved_argv = sys.argv
    sys.argv = [f"oml {config}", *overrides]
    try:
        runner()
    finally:
        sys.argv = saved_argv


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if args.command == "convert":
        return run_convert(args)
    run_pipeline(get_pipeline(args.command), args.config, args.overrides)


if __name__ == "__main__":
    main()
