"""Save and load a module under another naming of its state dict (e.g. a timm ViT under OpenAI CLIP's names).

A ``KeyMapping`` is a list of ``KeyRule`` s, each translating one family of keys (a regular expression with
``{i}`` style groups) in both directions, optionally with a reshape. ``attach_key_mapping(module, mapping)``
registers hooks so that:

* ``module.state_dict()`` (and the state dict of any parent) has the external names;
* ``load_state_dict`` accepts the external names (internal ones still work), and reports missing and
  unexpected keys with external names.

Parameters keep their internal names in ``named_parameters()`` (they are the real attributes).
"""

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import Tensor, nn

TReshape = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class KeyRule:
    """``internal`` and ``external`` are key templates whose ``{name}`` fields match one dotted part, e.g.
    ``"blocks.{i}.attn.qkv.weight"`` and ``"transformer.resblocks.{i}.attn.in_proj_weight"``.
    ``to_external``/``to_internal`` reshape the tensor on the way out and in (default: unchanged)."""

    internal: str
    external: str
    to_external: TReshape = _identity
    to_internal: TReshape = _identity

    def _regex(self, template: str) -> "re.Pattern[str]":
        pattern = re.escape(template)
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^.]+)", pattern)
        return re.compile(f"^{pattern}$")

    def match(self, key: str, external: bool) -> Optional[str]:
        """The key translated to the other naming, or None if the rule does not apply."""
        source, target = (self.external, self.internal) if external else (self.internal, self.external)
        found = self._regex(source).match(key)
        return None if found is None else target.format(**found.groupdict())


@dataclass
class KeyMapping:
    """An ordered list of rules and, optionally, the order in which external keys are listed."""

    rules: Sequence[KeyRule]
    external_order: Optional[Callable[[str], Tuple]] = None
    _cache: Dict[Tuple[str, bool], Optional[Tuple[str, KeyRule]]] = field(default_factory=dict, repr=False)

    def translate(self, key: str, external: bool) -> Optional[Tuple[str, KeyRule]]:
        """``(translated key, rule)`` or None when no rule applies."""
        cache_key = (key, external)
        if cache_key not in self._cache:
            self._cache[cache_key] = None
            for rule in self.rules:
                target = rule.match(key, external)
                if target is not None:
                    self._cache[cache_key] = (target, rule)
                    break
        return self._cache[cache_key]

    def _convert(self, state_dict: Dict[str, Tensor], external: bool) -> Dict[str, Tensor]:
        """Rename (and reshape) the keys of one naming (``external`` or internal) to the other one."""
        result = {}
        for key, value in state_dict.items():
            found = self.translate(key, external=external)
            if found is None:
                result[key] = value
            else:
                target, rule = found
                result[target] = rule.to_internal(value) if external else rule.to_external(value)
        return result

    def to_external(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Rename (and reshape) internal keys; keys without a rule stay as they are."""
        result = self._convert(state_dict, external=False)
        if self.external_order is not None:
            result = dict(sorted(result.items(), key=lambda item: self.external_order(item[0])))
        return result

    def to_internal(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Rename (and reshape) external keys; keys without a rule stay as they are."""
        return self._convert(state_dict, external=True)

    def internal_to_external_name(self, key: str) -> str:
        found = self.translate(key, external=False)
        return key if found is None else found[0]


def _split_prefix(keys: Sequence[str], prefix: str) -> List[str]:
    return [key for key in keys if key.startswith(prefix)]


def attach_key_mapping(module: nn.Module, mapping: KeyMapping) -> nn.Module:
    """Register the state-dict hooks of ``mapping`` on ``module`` (see the module docstring)."""

    def save_hook(mod: nn.Module, state_dict: Dict[str, Tensor], prefix: str, local_metadata: dict) -> None:
        own = {key[len(prefix) :]: state_dict.pop(key) for key in _split_prefix(list(state_dict), prefix)}
        for key, value in mapping.to_external(own).items():
            state_dict[prefix + key] = value

    def load_pre_hook(
        mod: nn.Module,
        state_dict: Dict[str, Tensor],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: List[str],
        unexpected_keys: List[str],
        error_msgs: List[str],
    ) -> None:
        mod._key_mapping_prefix = prefix
        own = {key[len(prefix) :]: state_dict.pop(key) for key in _split_prefix(list(state_dict), prefix)}
        for key, value in mapping.to_internal(own).items():
            state_dict[prefix + key] = value

    def load_post_hook(mod: nn.Module, incompatible_keys: nn.modules.module._IncompatibleKeys) -> None:
        prefix = getattr(mod, "_key_mapping_prefix", "")
        missing = incompatible_keys.missing_keys
        for index, key in enumerate(missing):
            if key.startswith(prefix):
                missing[index] = prefix + mapping.internal_to_external_name(key[len(prefix) :])

    module.register_state_dict_post_hook(save_hook)
    module.register_load_state_dict_pre_hook(load_pre_hook)
    module.register_load_state_dict_post_hook(load_post_hook)
    return module


__all__ = ["KeyRule", "KeyMapping", "attach_key_mapping"]
