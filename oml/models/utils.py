"""State-dict helpers shared by the extractors: prefixes, filtering, and patches for TorchScript graphs."""

from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

TStateDict = Dict[str, Tensor]

CRITERION_KEYS = ("criterion.weight", "speaker_loss.weight")


def find_prefix_in_state_dict(state_dict: TStateDict, trial_key: str) -> str:
    """The text before ``trial_key`` in the first key (in dict order) that contains it.

    >>> find_prefix_in_state_dict({"model.blocks.0.norm1.bias": 0, "model.norm.bias": 0}, "norm.bias")
    'model.'

    Raises:
        KeyError: if no key contains ``trial_key`` (the checkpoint does not belong to this model).
    """
    for key in state_dict:
        if trial_key in key:
            return key[: key.index(trial_key)]
    examples = list(state_dict)[:5]
    raise KeyError(
        f"No key of the state dict contains {trial_key!r}, so it does not look like a checkpoint of this "
        f"model. The first keys are: {examples}."
    )


def remove_prefix_from_state_dict(state_dict: TStateDict, trial_key: str) -> TStateDict:
    """Cut the prefix found by ``find_prefix_in_state_dict`` from every key (as OML does).

    >>> remove_prefix_from_state_dict({"model.norm.bias": 1, "model.blocks.0.w": 2}, "norm.bias")
    {'norm.bias': 1, 'blocks.0.w': 2}

    Raises:
        KeyError: if no key contains ``trial_key``.
        ValueError: if some key does not start with the prefix (e.g. extra heads saved next to the model).
    """
    prefix = find_prefix_in_state_dict(state_dict, trial_key)
    if not prefix:
        return dict(state_dict)
    wrong = [key for key in state_dict if not key.startswith(prefix)]
    if wrong:
        raise ValueError(
            f"The state dict keys were expected to start with the prefix {prefix!r} (found from {trial_key!r}), "
            f"but these do not: {wrong[:5]}{' ...' if len(wrong) > 5 else ''}."
        )
    return {key[len(prefix) :]: value for key, value in state_dict.items()}


def filter_state_dict(state_dict: TStateDict, needed_keys: Iterable[str]) -> TStateDict:
    """Keep only the entries whose keys are in ``needed_keys``.

    >>> filter_state_dict({"a": 1, "b": 2}, ["b", "c"])
    {'b': 2}
    """
    needed = set(needed_keys)
    return {key: value for key, value in state_dict.items() if key in needed}


def remove_criterion_in_state_dict(state_dict: TStateDict) -> TStateDict:
    """Drop the weights of a loss saved with the model (e.g. ArcFace's ``criterion.weight``).

    OML 0.4.4 failed on such checkpoints; the later OML versions drop these keys, and so do we.
    """
    return {key: value for key, value in state_dict.items() if key not in CRITERION_KEYS}


def unwrap_state_dict(
    checkpoint: object, source: str = "checkpoint", keys: Sequence[str] = ("state_dict",)
) -> TStateDict:
    """The state dict inside a loaded checkpoint: itself, or its entry under the first of ``keys`` that holds a dict.

    The default ``("state_dict",)`` is OML's rule (Lightning checkpoints); timm's releases also use ``"model"``
    and ``"state_dict_ema"``.

    Raises:
        TypeError: if the checkpoint holds no mapping of names to tensors.
    """
    if isinstance(checkpoint, dict):
        checkpoint = next((checkpoint[key] for key in keys if isinstance(checkpoint.get(key), dict)), checkpoint)
    if not isinstance(checkpoint, dict):
        raise TypeError(f"The {source} holds a {type(checkpoint).__name__}, expected a state dict (a dict of tensors).")
    return dict(checkpoint)


def check_arch(arch: str, archs: Iterable[str], owner: str) -> str:
    """``arch`` if it is one of ``archs``, else a ``ValueError`` that lists them."""
    archs = sorted(archs)
    if arch not in archs:
        raise ValueError(f"Unknown arch {arch!r} for {owner}, expected one of {archs}.")
    return arch


@contextmanager
def init_on_meta(enabled: bool = True) -> Iterator[None]:
    """Build modules on the ``meta`` device (no memory, no random init) when ``enabled``.

    Used when weights will be loaded right after building: call ``materialise`` and then load them all.
    """
    if not enabled:
        yield
        return
    with torch.device("meta"):
        yield


def materialise(module: nn.Module, device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """Give a module built by ``init_on_meta`` real (uninitialised) storage; every tensor must then be loaded.

    ``device`` defaults to torch's default device (CPU unless changed, e.g. by ``with torch.device(...)``).

    Raises:
        RuntimeError: if the module has non-persistent buffers, which a state dict cannot fill.
    """
    non_persistent = [
        f"{name}.{buffer}" for name, sub in module.named_modules() for buffer in sub._non_persistent_buffers_set
    ]
    if non_persistent:
        raise RuntimeError(f"Cannot materialise a module with non-persistent buffers: {non_persistent}.")
    return module.to_empty(device=device if device is not None else torch.get_default_device())


def _script_graphs(module: torch.jit.ScriptModule) -> List[torch.Graph]:
    graphs = []
    for submodule in module.modules():
        for method_name in ("forward", "encode_image"):
            method = getattr(submodule, method_name, None)
            graph = getattr(method, "graph", None)
            if graph is not None:
                graphs.append(graph)
    return graphs


def _patch_graph_constants(module: torch.jit.ScriptModule, device: Optional[str], to_float: bool) -> None:
    for graph in _script_graphs(module):
        for node in graph.findAllNodes("prim::Constant"):
            output = node.output()
            if device is not None and output.type().kind() == "DeviceObjType" and str(output.toIValue()) != device:
                node.s_("value", device)
        if not to_float:
            continue
        for node in graph.findAllNodes("aten::to"):
            # aten::to(self, dtype, ...) and aten::to(self, device, dtype, ...): the dtype constant 5 is float16.
            # A fresh constant replaces it, since TorchScript may share one constant between several uses.
            for index, value in list(enumerate(node.inputs()))[1:3]:
                source = value.node()
                if source.kind() == "prim::Constant" and value.type().kind() == "IntType" and value.toIValue() == 5:
                    float32 = graph.insertConstant(6)
                    float32.node().moveBefore(node)
                    node.replaceInput(index, float32)


def patch_device(module: nn.Module, device: str = "cpu") -> nn.Module:
    """Rewrite the device constants (``cuda``) baked into a TorchScript graph, e.g. OpenAI's CLIP archives."""
    if isinstance(module, torch.jit.ScriptModule):
        _patch_graph_constants(module, device=device, to_float=False)
    return module


def patch_float(module: nn.Module) -> nn.Module:
    """Make a TorchScript graph that casts to ``float16`` cast to ``float32`` instead, then upcast the weights."""
    if isinstance(module, torch.jit.ScriptModule):
        _patch_graph_constants(module, device=None, to_float=True)
    return module.float()


def patch_device_and_float(module: nn.Module, device: str = "cuda") -> nn.Module:
    """``patch_device`` then, on CPU, ``patch_float`` (half precision is not usable there)."""
    module = patch_device(module, device)
    return patch_float(module) if device == "cpu" else module


__all__ = [
    "TStateDict",
    "find_prefix_in_state_dict",
    "remove_prefix_from_state_dict",
    "filter_state_dict",
    "remove_criterion_in_state_dict",
    "unwrap_state_dict",
    "check_arch",
    "init_on_meta",
    "materialise",
    "patch_device",
    "patch_float",
    "patch_device_and_float",
]
