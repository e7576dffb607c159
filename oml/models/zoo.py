"""Typed zoo entries: where pretrained weights come from, how they are checked, which model and preprocessing
they belong to, what they scored and under which licence they are published.

``pretrained_models`` of every extractor maps a weights name to a ``PretrainedEntry``. An entry is frozen
data; it also reads as the dict OML 0.4.4 used (``entry["url"]``, ``entry["hash"]``, ``entry["init_args"]``,
``{**entry, "url": [...]}``), and ``as_entry`` turns such a dict back into an entry, so code written for
OML's dict entries keeps working. Reading a dict-valued field gives a fresh copy: editing it cannot change
the zoo.
"""

import copy
import re
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

_HEX = re.compile(r"^[0-9a-f]+$")


def _frozen(mapping: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class TransformsSpec:
    """A ``{"name", "args"}`` config of ``oml.registry.transforms.TRANSFORMS_REGISTRY``."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", _frozen(self.args))

    def as_cfg(self) -> Dict[str, Any]:
        """The config as a new plain dict (``get_transforms_by_cfg`` builds it)."""
        return {"name": self.name, "args": copy.deepcopy(dict(self.args))}


TTransformsSpec = Union[TransformsSpec, Mapping[str, Any]]


def _hex_or_none(value: Optional[str], what: str, min_length: int) -> Optional[str]:
    if value is not None and not (isinstance(value, str) and _HEX.match(value) and len(value) >= min_length):
        raise ValueError(f"The {what} of a zoo entry must be a lowercase hex string of >= {min_length} characters, "
                         f"got {value!r}.")  # fmt: skip
    return value


@dataclass(frozen=True)
class PretrainedEntry(Mapping[str, Any]):
    """One set of pretrained weights in the zoo.

    Attributes:
        sources: URLs (or Google-Drive file ids) tried in order.
        fname: the file name inside ``oml.const.CKPT_SAVE_ROOT``.
        init_args: constructor arguments of the model the weights belong to (``from_pretrained`` uses them).
        transforms: the preprocessing the weights were trained with.
        md5: a prefix of the file's md5 hex digest (OML's ``hash``), None where the publisher gives none.
        sha256: a prefix of the file's sha256 hex digest, where the publisher gives one.
        torchscript_submodule: for TorchScript releases (OpenAI CLIP), the submodule whose state dict is used;
            such a file is opened only when its full md5 equals ``md5``.
        metrics: figures published for the weights, e.g. ``{"cmc@1": 0.921}``.
        licence: a note on the licence of the weights and where they come from.
    """

    sources: Tuple[str, ...]
    fname: str
    init_args: Mapping[str, Any]
    transforms: TransformsSpec
    md5: Optional[str] = None
    sha256: Optional[str] = None
    torchscript_submodule: Optional[str] = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    licence: str = ""

    def __post_init__(self) -> None:
        sources = (self.sources,) if isinstance(self.sources, str) else tuple(self.sources)
        if not sources or not all(isinstance(source, str) and source for source in sources):
            raise ValueError(f"A zoo entry needs at least one source (a URL or a file id), got {self.sources!r}.")
        if not self.fname or "/" in self.fname:
            raise ValueError(f"The fname of a zoo entry must be a bare file name, got {self.fname!r}.")
        if self.torchscript_submodule is not None and (self.md5 is None or len(self.md5) != 32):
            raise ValueError("A TorchScript zoo entry needs the full md5 of its file (it runs code when opened).")
        _hex_or_none(self.md5, "md5", 6)
        _hex_or_none(self.sha256, "sha256", 8)
        transforms = self.transforms
        if not isinstance(transforms, TransformsSpec):
            transforms = TransformsSpec(transforms["name"], transforms.get("args") or {})
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "init_args", _frozen(self.init_args))
        object.__setattr__(self, "transforms", transforms)
        object.__setattr__(self, "metrics", _frozen(self.metrics))

    # -- the dict view of OML 0.4.4 (``url`` and ``hash`` are OML's names of ``sources`` and ``md5``) --

    def _as_dict(self) -> Dict[str, Any]:
        return {
            "url": list(self.sources),
            "hash": self.md5,
            "sha256": self.sha256,
            "fname": self.fname,
            "init_args": copy.deepcopy(dict(self.init_args)),
            "transforms": self.transforms.as_cfg(),
            "is_jitted": self.torchscript_submodule is not None,
            "torchscript_submodule": self.torchscript_submodule,
            "metrics": dict(self.metrics),
            "licence": self.licence,
        }

    def __getitem__(self, key: str) -> Any:
        view = self._as_dict()
        if key not in view:
            raise KeyError(key)
        return view[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._as_dict())

    def __len__(self) -> int:
        return len(self._as_dict())

    __hash__ = None  # type: ignore[assignment]  # the mappings inside are not hashable


_DICT_KEYS = {"url", "hash", "sha256", "fname", "init_args", "transforms", "is_jitted", "torchscript_submodule",
              "metrics", "licence"}  # fmt: skip
_FIELDS = {f.name for f in fields(PretrainedEntry)}


def as_entry(entry: Union[PretrainedEntry, Mapping[str, Any]], name: str = "") -> PretrainedEntry:
    """``entry`` as a ``PretrainedEntry``; a dict may use OML's keys (``url``, ``hash``) or the field names.

    Raises:
        ValueError: if the dict has unknown keys or misses ``url``/``sources``, ``fname``... (the message names them).
    """
    if isinstance(entry, PretrainedEntry):
        return entry
    unknown = set(entry) - _DICT_KEYS - _FIELDS
    if unknown:
        raise ValueError(f"The zoo entry {name!r} has unknown keys {sorted(unknown)}; known: {sorted(_DICT_KEYS)}.")
    data = {key: value for key, value in entry.items() if key in _FIELDS}
    if "url" in entry:
        data["sources"] = entry["url"]
    if "hash" in entry:
        data["md5"] = entry["hash"]
    if entry.get("is_jitted") and not data.get("torchscript_submodule"):
        raise ValueError(f"The zoo entry {name!r} is a TorchScript file: give its 'torchscript_submodule'.")
    missing = {"sources", "fname", "init_args", "transforms"} - set(data)
    if missing:
        raise ValueError(f"The zoo entry {name!r} misses {sorted(missing)}.")
    return PretrainedEntry(**data)


def zoo_entry(
    sources: Union[str, Sequence[str]],
    fname: str,
    init_args: Mapping[str, Any],
    transforms: str,
    transforms_args: Optional[Mapping[str, Any]] = None,
    **more: Any,
) -> PretrainedEntry:
    """A ``PretrainedEntry`` with the transforms given by name and arguments (the short form used by the zoo)."""
    return PretrainedEntry(
        sources=(sources,) if isinstance(sources, str) else tuple(sources),
        fname=fname,
        init_args=init_args,
        transforms=TransformsSpec(transforms, transforms_args or {}),
        **more,
    )


TPretrainedModels = Dict[str, PretrainedEntry]

__all__ = ["TransformsSpec", "PretrainedEntry", "TPretrainedModels", "as_entry", "zoo_entry"]
