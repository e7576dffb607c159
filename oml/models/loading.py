"""The one loader of the extractors and pairwise models: from ``weights`` to a strictly loaded module.

``load_weights(module, weights, pretrained_models, owner, *steps)``:

1. reads ``weights``, a zoo name (downloaded and hash-checked) or a file (``read_weights``);
2. drops the weights of a loss saved next to the model (``criterion.weight``, as the later OML versions do);
3. applies the model's ``steps`` in order: each turns a state dict in some layout (a publisher's release,
   OML's or Lightning's checkpoints with their prefixes) into the next, ending in the module's own layout;
4. loads the result with ``strict=True``, so a missing or unexpected key is an error naming it.

The steps are small functions ``(state_dict, module) -> state_dict``; the ones shared by several models are
here (``oml_prefix``, ``cut_through``, ``keep_own_keys``, ``strip_known_prefix``).
"""

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

from torch import nn

from oml.models.checkpoint import load_state_dict_strictly, read_weights
from oml.models.utils import (
    TStateDict,
    init_on_meta,
    materialise,
    remove_criterion_in_state_dict,
    remove_prefix_from_state_dict,
)

TStep = Callable[[TStateDict, nn.Module], TStateDict]
TWeights = Union[str, Path]
TModule = TypeVar("TModule", bound=nn.Module)


def convert_state_dict(state_dict: TStateDict, module: nn.Module, *steps: TStep) -> TStateDict:
    """Drop a loss's weights, then apply ``steps`` in order (what ``load_weights`` does before loading)."""
    state_dict = remove_criterion_in_state_dict(state_dict)
    for step in steps:
        state_dict = step(state_dict, module)
    return state_dict


def load_weights(
    module: nn.Module, weights: TWeights, pretrained_models: Mapping[str, Any], owner: str, *steps: TStep
) -> None:
    """Read ``weights`` (a name of ``pretrained_models`` or a file), convert it with ``steps``, load it strictly.

    Raises:
        FileNotFoundError: if ``weights`` is neither a zoo name nor a file (the message lists the zoo of ``owner``).
        oml.models.checkpoint.CheckpointMismatchError: if the converted state dict does not fit ``module``
            (a short summary of the missing / unexpected keys and shapes, a ``RuntimeError``).
    """
    state_dict = read_weights(weights, pretrained_models, owner)
    load_state_dict_strictly(module, convert_state_dict(state_dict, module, *steps), source=str(weights))


def build_with_weights(
    build: Callable[[], TModule],
    weights: Optional[TWeights],
    pretrained_models: Mapping[str, Any],
    owner: str,
    *steps: TStep,
) -> TModule:
    """``build()`` the module; with ``weights``, build it on the meta device (no random init) and load them."""
    with init_on_meta(weights is not None):
        module = build()
    if weights is not None:
        materialise(module)
        load_weights(module, weights, pretrained_models, owner, *steps)
    return module


def oml_prefix(trial_key: str) -> TStep:
    """OML's prefix rule: cut what precedes ``trial_key`` in the first key containing it, from every key."""

    def step(state_dict: TStateDict, module: nn.Module) -> TStateDict:
        return remove_prefix_from_state_dict(state_dict, trial_key=trial_key)

    return step


def cut_through(marker: str) -> TStep:
    """Keys containing ``marker`` lose everything up to its end (``"text.x"`` stays, ``"a.visual.x"`` -> ``"x"``)."""

    def step(state_dict: TStateDict, module: nn.Module) -> TStateDict:
        result = {key: value for key, value in state_dict.items() if marker not in key}
        result.update({key.split(marker, 1)[1]: value for key, value in state_dict.items() if marker in key})
        return result

    return step


def keep_own_keys(state_dict: TStateDict, module: nn.Module) -> TStateDict:
    """Keep only the keys of the module (e.g. drop the text tower of a CLIP release)."""
    own = module.state_dict().keys()
    return {key: value for key, value in state_dict.items() if key in own}


def strip_known_prefix(candidates: Sequence[str]) -> TStep:
    """Cut the first of ``candidates`` after which some key is a key of the module; drop keys without it.

    A state dict in which no key fits any candidate is returned as it is (a publisher's layout that a later
    step converts).
    """

    def step(state_dict: TStateDict, module: nn.Module) -> TStateDict:
        own = module.state_dict().keys()
        for prefix in candidates:
            if any(key.startswith(prefix) and key[len(prefix) :] in own for key in state_dict):
                return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
        return state_dict

    return step


__all__ = [
    "TStep",
    "convert_state_dict",
    "load_weights",
    "build_with_weights",
    "oml_prefix",
    "cut_through",
    "keep_own_keys",
    "strip_known_prefix",
]
