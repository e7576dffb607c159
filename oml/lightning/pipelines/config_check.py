"""Check a pipeline config before anything runs: unknown keys, types of the keys the pipelines read, and the
metric to checkpoint on.

OML 0.4.4 read configs with ``cfg[...]`` / ``cfg.get(...)`` as the run went: a typo in an optional key
(``+valid_perod=1``) was ignored, ``max_epochs=abc`` failed inside Lightning, and a misspelt
``metric_for_checkpointing`` failed after the first validation, with nothing saved. Here every key is
checked up front and every error is a ``ConfigError`` naming the key, what it holds and what was expected.

Which keys are legal:
* the keys a pipeline reads (``SCHEMAS``), with their types;
* OML's bookkeeping keys (``tags``, ``postfix``, ``logs_root``, ``logs_folder``, ``hydra_dir``, ``hydra``);
* keys that only feed interpolations (e.g. ``extractor_weights`` used as ``${extractor_weights}``). They are
  seen in an OmegaConf config or a dict with ``${...}`` strings; in a dict that was already resolved, a key
  whose value is null or also appears under another key is taken for such a source.
"""

import difflib
import inspect
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from oml.const import TCfg
from oml.utils.checks import InvalidArgumentError, check_int, is_int
from oml.utils.misc import dictconfig_to_dict


class ConfigError(ValueError):
    """A pipeline config misses a key or holds a value that cannot work (the message names the key)."""


TChecker = Callable[[Any, str], None]

BOOKKEEPING_KEYS = ("tags", "postfix", "logs_root", "logs_folder", "hydra_dir", "hydra", "defaults")
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


# ----------------------------------------------------------------------------------------------- value checks
def _integer(minimum: Optional[int]) -> TChecker:
    def check(value: Any, key: str) -> None:
        try:
            check_int(value, key, minimum=minimum)
        except InvalidArgumentError as e:
            raise ConfigError(str(e)) from None

    return check


def _number(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{key} must be a non-negative number, got {value!r} of type {type(value).__name__}.")


def _boolean(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be True or False, got {value!r} of type {type(value).__name__}.")


def _string(value: Any, key: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {value!r} of type {type(value).__name__}.")


def _choice(*options: Any) -> TChecker:
    def check(value: Any, key: str) -> None:
        if value not in options:
            raise ConfigError(f"{key} must be one of {list(options)}, got {value!r}.")

    return check


def _directory(value: Any, key: str) -> None:
    _string(value, key)
    if not Path(value).is_dir():
        raise ConfigError(f"{key}={value!r} is not an existing folder.")


def _file(value: Any, key: str) -> None:
    _string(value, key)
    if not Path(value).is_file():
        raise ConfigError(f"{key}={value!r} is not an existing file.")


def _mapping(value: Any, key: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping of keys to values, got {value!r} of type {type(value).__name__}.")


def _block(value: Any, key: str) -> None:
    """A ``{name: <registry key>, args: {...}}`` block."""
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise ConfigError(f"{key} must be a block {{name: <registry name>, args: {{...}}}}, got {value!r}.")
    unknown = [k for k in value if k not in ("name", "args")]
    if unknown:
        raise ConfigError(f"{key} has the keys {unknown}; a component block has only `name` and `args`.")
    if value.get("args") is not None:
        _mapping(value["args"], f"{key}.args")


def _devices(value: Any, key: str) -> None:
    if isinstance(value, (list, tuple)):
        if not value or not all(is_int(v) and v >= 0 for v in value):
            raise ConfigError(f"{key} must be a count or a list of device ids, got {value!r}.")
        return
    _integer(1)(value, key)


def _optional(checker: TChecker) -> TChecker:
    def check(value: Any, key: str) -> None:
        if value is not None:
            checker(value, key)

    return check


def _anything(value: Any, key: str) -> None:
    """Read by other code (Hydra, a logger) or free-form."""


def _optimizer(value: Any, key: str) -> None:
    _block(value, key)
    args = value.get("args") or {}
    if "lr" not in args:
        raise ConfigError(f"The {key} block needs `args.lr`: the pipeline gives it to every parameter group.")
    _number(args["lr"], f"{key}.args.lr")


def _keys_of(names: Sequence[str], where: str, checks: Optional[Dict[str, TChecker]] = None) -> TChecker:
    """A mapping whose keys are among ``names`` (arguments of a function), some of them type-checked."""

    def check(value: Any, key: str) -> None:
        _mapping(value, key)
        for name, item in value.items():
            if name not in names:
                raise ConfigError(_unknown_message(f"{key}.{name}", str(name), names, f"{where} takes"))
            if checks and name in checks:
                checks[name](item, f"{key}.{name}")

    return check


def _parameters(function: Callable) -> List[str]:
    return [p for p in inspect.signature(function).parameters if p not in ("self", "args", "kwargs")]


def _metric_args(value: Any, key: str) -> None:
    from oml.metrics.embeddings import EmbeddingMetrics

    top_k = dict.fromkeys(("cmc_top_k", "precision_top_k", "map_top_k"), _ks)
    _keys_of(_parameters(EmbeddingMetrics.__init__), "EmbeddingMetrics", top_k)(value, key)


def _ks(value: Any, key: str) -> None:
    if not isinstance(value, (list, tuple)) or not all(is_int(v) and v >= 1 for v in value):
        raise ConfigError(f"{key} must be a list of positive integers, got {value!r}.")


def _trainer_args(value: Any, key: str) -> None:
    import pytorch_lightning as pl

    _keys_of(_parameters(pl.Trainer.__init__), "pl.Trainer")(value, key)


_scheduling = _optional(
    _keys_of(
        ("scheduler", "scheduler_interval", "scheduler_frequency", "monitor_metric"),
        "the scheduling block",
        {
            "scheduler": _block,
            "scheduler_interval": _choice("step", "epoch"),
            "scheduler_frequency": _integer(1),
            "monitor_metric": _optional(_string),
        },
    )
)

# ----------------------------------------------------------------------------------------------- schemas
# key -> (required, checker)
_ENGINE: Dict[str, Tuple[bool, TChecker]] = {
    "accelerator": (False, _optional(_string)),
    "devices": (False, _optional(_devices)),
    "num_nodes": (False, _optional(_integer(1))),
    "precision": (False, _choice(32, 16, "32", "16", "bf16", "32-true", "16-mixed", "bf16-mixed")),
}
_TRAINING: Dict[str, Tuple[bool, TChecker]] = {
    **_ENGINE,
    "seed": (True, _integer(None)),
    "dataset_root": (True, _directory),
    "dataframe_name": (True, _string),
    "num_workers": (True, _integer(0)),
    "optimizer": (True, _optimizer),
    "max_epochs": (True, _integer(1)),
    "metric_for_checkpointing": (True, _string),
    "mode_for_checkpointing": (False, _optional(_choice("max", "min"))),
    "valid_period": (False, _integer(1)),
    "cache_size": (False, _optional(_integer(0))),
    "show_dataset_warnings": (False, _boolean),
    "allow_paths_outside_root": (False, _boolean),
    "log_images": (False, _boolean),
    "metric_args": (False, _optional(_metric_args)),
    "scheduling": (False, _scheduling),
    "freeze_n_epochs": (False, _integer(0)),
    "logger": (False, _optional(_block)),
    "lightning_trainer_extra_args": (False, _optional(_trainer_args)),
    "ckpt_path": (False, _optional(_file)),
    "validate_before_training": (False, _boolean),
    "transforms_train": (True, _optional(_block)),
}
SCHEMAS: Dict[str, Dict[str, Tuple[bool, TChecker]]] = {
    "train": {
        **_TRAINING,
        "transforms_val": (True, _optional(_block)),
        "bs_val": (True, _integer(1)),
        "extractor": (True, _block),
        "criterion": (True, _block),
        "sampler": (False, _optional(_block)),
        "bs_train": (False, _integer(1)),
    },
    "train_postprocessor": {
        **_TRAINING,
        "extractor": (True, _block),
        "transforms_extraction": (True, _optional(_block)),
        "postprocessor": (True, _block),
        "sampler": (True, _optional(_block)),
        "batch_size_inference": (True, _integer(1)),
        "embeddings_cache_dir": (False, _optional(_string)),
        "extractor_weights": (False, _anything),
        "pairwise_model": (False, _optional(_block)),
        "hard_pairs_mining": (False, _boolean),
        "find_unused_parameters": (False, _boolean),
    },
    "validate": {
        **_ENGINE,
        "dataset_root": (True, _directory),
        "dataframe_name": (True, _string),
        "transforms_val": (True, _optional(_block)),
        "bs_val": (True, _integer(1)),
        "num_workers": (True, _integer(0)),
        "extractor": (True, _block),
        "postprocessor": (False, _optional(_block)),
        "metric_args": (False, _optional(_metric_args)),
        "show_dataset_warnings": (False, _boolean),
        "allow_paths_outside_root": (False, _boolean),
        "extractor_weights": (False, _anything),
        "postprocessor_weights": (False, _anything),
    },
    "predict": {
        **_ENGINE,
        "data_dir": (True, _directory),
        "save_dir": (True, _string),
        "bs": (True, _integer(1)),
        "num_workers": (True, _integer(0)),
        "transforms_predict": (True, _optional(_block)),
        "extractor": (True, _block),
    },
}


# ----------------------------------------------------------------------------------------------- unknown keys
def _unknown_message(key: str, name: str, known: Sequence[str], context: str) -> str:
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown config key {key!r}: {context} no such key.{hint}"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def interpolated_keys(cfg: Mapping) -> Set[str]:
    """Top-level keys referenced as ``${key}`` or ``${key.sub}`` anywhere in an unresolved config."""
    names = set()
    for text in _strings(cfg):
        for reference in _INTERPOLATION.findall(text):
            if ":" not in reference:  # resolvers such as ${now:...} or ${oc.env:...}
                names.add(reference.lstrip(".").split(".")[0].split("[")[0])
    return names


def _values_elsewhere(cfg: Mapping, key: str) -> bool:
    """Whether ``cfg[key]`` is null or equals a value under another key (a resolved interpolation source)."""
    value = cfg[key]
    if value is None:
        return True
    if isinstance(value, (bool, int, float)):
        return False

    def found(node: Any) -> bool:
        if node == value:
            return True
        items = node.values() if isinstance(node, Mapping) else node if isinstance(node, (list, tuple)) else ()
        return any(found(item) for item in items)

    return any(found(item) for name, item in cfg.items() if name != key)


def _is_unresolved(cfg: Mapping) -> bool:
    return any("${" in text for text in _strings(cfg))


# ----------------------------------------------------------------------------------------------- entry point
def check_config(cfg: TCfg, pipeline: str) -> Dict[str, Any]:
    """Check a config of ``pipeline`` (``train``, ``train_postprocessor``, ``validate``, ``predict``).

    Returns:
        The config as a plain dict with interpolations resolved (what the pipeline reads).

    Raises:
        ConfigError: the first problem found: missing keys, an unknown key (with a "did you mean" when a known
            key is close), a value of the wrong type or range, or a ``metric_for_checkpointing`` that the
            config's ``metric_args`` will not produce.
    """
    schema = SCHEMAS[pipeline]
    raw = _unresolved(cfg)
    resolved = _resolved(cfg, raw)

    missing = sorted(key for key, (required, _) in schema.items() if required and key not in resolved)
    if missing:
        raise ConfigError(f"The {pipeline} config misses the required keys {missing}.")
    feeds = interpolated_keys(raw)
    known = [*schema, *BOOKKEEPING_KEYS]
    for key in resolved:
        if key in schema or key in BOOKKEEPING_KEYS or key in feeds:
            continue
        if not _is_unresolved(raw) and _values_elsewhere(resolved, key):
            continue
        raise ConfigError(_unknown_message(key, key, known, f"the {pipeline} pipeline reads"))
    for key, value in resolved.items():
        if key in schema:
            schema[key][1](value, key)
    if "metric_for_checkpointing" in schema:
        check_metric_for_checkpointing(resolved["metric_for_checkpointing"], resolved.get("metric_args") or {})
    if pipeline == "train" and resolved.get("sampler") is None and "bs_train" not in resolved:
        raise ConfigError("With `sampler: null` the config needs `bs_train` (the training batch size).")
    return resolved


def _unresolved(cfg: TCfg) -> Dict[str, Any]:
    if type(cfg).__name__ == "DictConfig":
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"A pipeline config must be a mapping, got {type(cfg).__name__}.")
    return dict(cfg)


def _resolved(cfg: TCfg, raw: Dict[str, Any]) -> Dict[str, Any]:
    if type(cfg).__name__ != "DictConfig" and _is_unresolved(raw):
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            return OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
        except OmegaConfBaseException as e:
            raise ConfigError(f"The config has an interpolation that cannot be resolved: {e}") from None
    return dictconfig_to_dict(cfg)


def expected_metric_names(metric_args: Mapping[str, Any]) -> List[str]:
    """The ``OVERALL/...`` names ``EmbeddingMetrics(**metric_args)`` logs (per-category names repeat them)."""
    from oml.metrics.embeddings import EmbeddingMetrics

    defaults = {name: p.default for name, p in inspect.signature(EmbeddingMetrics.__init__).parameters.items()}
    args = {**defaults, **metric_args}
    families = {
        "cmc": args["cmc_top_k"],
        "precision": args["precision_top_k"],
        "map": args["map_top_k"],
        "fnmr@fmr": args["fmr_vals"],
        "pcf": args["pfc_variance"],
    }
    names = [f"OVERALL/{family}/{value}" for family, values in families.items() for value in values]
    # MAP@R, R-precision, MRR and the clustering metrics are logged without a k
    return names + [f"OVERALL/{name}" for name in (*args["ranking_metrics"], *args["clustering_metrics"])]


def check_metric_for_checkpointing(metric: str, metric_args: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` unless the validation will log ``metric`` (``<category>/<metric>/<k>``)."""
    names = expected_metric_names(metric_args)
    per_category = metric_args.get("categories_key") is not None and not metric_args.get("return_only_main_category")
    parts = metric.split("/", 1)
    if metric in names or (per_category and len(parts) == 2 and f"OVERALL/{parts[1]}" in names):
        return
    close = difflib.get_close_matches(metric, names, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    categories = " (or <category>/... for a category)" if per_category else ""
    raise ConfigError(
        f"metric_for_checkpointing={metric!r} is not among the metrics this config's metric_args produce: "
        f"{names}{categories}.{hint} Add the k or value to metric_args (e.g. cmc_top_k) or pick one of these."
    )


__all__ = [
    "BOOKKEEPING_KEYS",
    "ConfigError",
    "SCHEMAS",
    "check_config",
    "check_metric_for_checkpointing",
    "expected_metric_names",
    "interpolated_keys",
]
