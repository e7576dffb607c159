"""Shared machinery of the registries: ``{name, args}`` configs, clear errors, building with runtime kwargs.

A registry is a plain dict ``name -> constructor``. The helpers here are generic, so every
registry (losses, miners, samplers, optimizers, schedulers, models, transforms, ...) can use them.
"""

import importlib
import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from oml.utils.misc import dictconfig_to_dict


class RegistryKeyError(KeyError):
    """An unknown name was asked from a registry (a ``KeyError`` with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_in_registry(name: Any, registry: Mapping[str, Any], kind: str, extra: Sequence[str] = ()) -> None:
    """Raise ``RegistryKeyError`` listing the available names unless ``name`` is in ``registry``.

    Args:
        name: the requested name.
        registry: name -> constructor.
        kind: what is built, for the message (e.g. ``"criterion"``).
        extra: more lines for the message (e.g. about lazily resolved names).

    >>> check_in_registry("adam", {"sgd": None}, "optimizer")
    Traceback (most recent call last):
    ...
    oml.registry._base.RegistryKeyError: Unknown optimizer 'adam'. Available: ['sgd'].
    """
    if not isinstance(name, str) or name not in registry:
        message = f"Unknown {kind} {name!r}. Available: {sorted(registry)}."
        if extra:
            message += " " + " ".join(extra)
        raise RegistryKeyError(message)


def is_cfg(value: Any) -> bool:
    """Whether ``value`` looks like a ``{name, args}`` block (a mapping with a ``name``)."""
    return isinstance(value, Mapping) and "name" in value


def parse_cfg(cfg: Any, kind: str) -> Tuple[str, Dict[str, Any]]:
    """Split a ``{"name": ..., "args": {...}}`` config (a dict or an OmegaConf ``DictConfig``) into ``(name, args)``.

    ``args`` may be missing or null (no arguments).

    >>> parse_cfg({"name": "balance", "args": {"n_labels": 2}}, "sampler")
    ('balance', {'n_labels': 2})
    """
    cfg = dictconfig_to_dict(cfg)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"A {kind} config must be a mapping {{name: ..., args: {{...}}}}, got {type(cfg).__name__}.")
    if "name" not in cfg:
        raise ValueError(f"A {kind} config needs a 'name' key, got keys {sorted(cfg)}.")
    unknown = set(cfg) - {"name", "args"}
    if unknown:
        raise ValueError(f"A {kind} config may only have the keys 'name' and 'args', got extra keys {sorted(unknown)}.")
    args = cfg.get("args") or {}
    if not isinstance(args, Mapping):
        raise TypeError(f"'args' of the {kind} config {cfg['name']!r} must be a mapping, got {type(args).__name__}.")
    return cfg["name"], dict(args)


def _signature(constructor: Callable[..., Any]) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(constructor)
    except (TypeError, ValueError):
        return None


def accepted_runtime_kwargs(constructor: Callable[..., Any], runtime_kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """The runtime kwargs (e.g. ``labels``, ``label2category``) that ``constructor`` names explicitly.

    Unlike ``oml.utils.misc.remove_unused_kwargs``, a catch-all ``**kwargs`` does not count: runtime
    values are only given to constructors that ask for them by name.
    """
    signature = _signature(constructor)
    if signature is None:
        return {}
    named = {
        name
        for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {key: value for key, value in runtime_kwargs.items() if key in named}


def build(
    constructor: Callable[..., Any],
    kind: str,
    name: str,
    args: Mapping[str, Any],
    runtime_kwargs: Optional[Mapping[str, Any]] = None,
) -> Any:
    """Call ``constructor(**args, **accepted runtime kwargs)``; bad arguments raise a ``TypeError`` naming it.

    Args:
        constructor: the class or function.
        kind: what is built (for messages).
        name: its registry name (for messages).
        args: the arguments from the config (all are passed; a typo is an error).
        runtime_kwargs: values known at run time, passed only if the constructor names them.
    """
    kwargs = {**dict(args), **accepted_runtime_kwargs(constructor, runtime_kwargs or {})}
    signature = _signature(constructor)
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as e:
            accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
            raise TypeError(
                f"Cannot build {kind} {name!r} with arguments {sorted(kwargs)}: {e}. It accepts: {accepted}."
            ) from None
    return constructor(**kwargs)


def build_from_registry(
    registry: Mapping[str, Callable[..., Any]],
    kind: str,
    name: Any,
    args: Mapping[str, Any],
    runtime_kwargs: Optional[Mapping[str, Any]] = None,
) -> Any:
    """``build`` the constructor registered as ``name`` (an unknown name raises ``RegistryKeyError``)."""
    check_in_registry(name, registry, kind)
    return build(registry[name], kind, name, args, runtime_kwargs)


def build_by_cfg_for(
    registry: Mapping[str, Callable[..., Any]],
    kind: str,
    cfg: Any,
    target_key: str,
    target: Any,
    kwargs_runtime: Dict[str, Any],
) -> Any:
    """Build a ``{name, args}`` config of ``registry`` for a target it needs (an optimizer's ``params``, a scheduler's
    ``optimizer``), given explicitly or among ``kwargs_runtime``; the other runtime kwargs go to constructors that
    name them.
    """
    name, args = parse_cfg(cfg, kind)
    if target is None:
        target = kwargs_runtime.pop(target_key, None)
    if target is None:
        raise ValueError(f"{kind.capitalize()} {name!r} needs {target_key!r}.")
    return build_from_registry(registry, kind, name, {**args, target_key: target}, kwargs_runtime)


class LazyNamespace:
    """Classes of an optional package, resolved by prefixed names (e.g. ``pml.TripletMarginLoss``) on first use.

    Args:
        prefix: the prefix of the names, e.g. ``"pml."``.
        module: the module holding the classes, e.g. ``"pytorch_metric_learning.losses"``.
        extra: the pip extra that installs the package (for the error message).
        predicate: which attributes of the module are offered.
    """

    def __init__(self, prefix: str, module: str, extra: str, predicate: Callable[[str, Any], bool]):
        self.prefix = prefix
        self.module = module
        self.extra = extra
        self.predicate = predicate

    def owns(self, name: Any) -> bool:
        """Whether ``name`` has this namespace's prefix."""
        return isinstance(name, str) and name.startswith(self.prefix)

    def _import(self) -> Any:
        try:
            return importlib.import_module(self.module)
        except ImportError as e:
            raise ImportError(
                f"Names starting with {self.prefix!r} need the optional package of {self.module!r}: "
                f'pip install "oml[{self.extra}]" ({e}).'
            ) from e

    def names(self) -> List[str]:
        """All available prefixed names (empty if the package is not installed)."""
        try:
            module = self._import()
        except ImportError:
            return []
        return sorted(f"{self.prefix}{attr}" for attr in dir(module) if self.predicate(attr, getattr(module, attr)))

    def resolve(self, name: str, kind: str) -> Any:
        """The class behind a prefixed name; unknown names raise ``RegistryKeyError`` listing the available ones."""
        module = self._import()
        attr = name[len(self.prefix) :]
        value = getattr(module, attr, None)
        if value is None or not self.predicate(attr, value):
            raise RegistryKeyError(
                f"Unknown {kind} {name!r}. Available with the prefix {self.prefix!r}: {self.names()}."
            )
        return value

    def hint(self) -> str:
        """A line for "unknown name" messages."""
        return f"Classes of {self.module} are available as '{self.prefix}<ClassName>' (e.g. {self.names()[:3]})."


__all__ = [
    "RegistryKeyError",
    "check_in_registry",
    "is_cfg",
    "parse_cfg",
    "accepted_runtime_kwargs",
    "build",
    "build_from_registry",
    "build_by_cfg_for",
    "LazyNamespace",
]
