"""Interfaces of models: extractors, freezable models and pairwise models."""

from abc import ABC, abstractmethod
from typing import Any, Dict

from torch import Tensor, nn


class IExtractor(nn.Module, ABC):
    """A model that maps a batch of inputs to a batch of embeddings ``[B, feat_dim]``.

    ``pretrained_models`` maps a weights name to a zoo entry: a dict with ``init_args`` (constructor
    arguments), and, for downloadable weights, ``url`` (a URL or a list of sources), ``hash`` (md5
    prefix), ``fname`` and ``transforms``.
    """

    pretrained_models: Dict[str, Any] = {}

    def extract(self, x: Tensor) -> Tensor:
        """Return the embeddings of ``x`` (the same as ``forward``)."""
        return self.forward(x)

    @property
    @abstractmethod
    def feat_dim(self) -> int:
        """Dimension of the embeddings."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, weights: str) -> "IExtractor":
        """Build the model with the constructor arguments of a zoo entry and load its weights.

        Raises:
            KeyError: if ``weights`` is not a key of ``pretrained_models`` (the message lists the keys).
        """
        if weights not in cls.pretrained_models:
            raise KeyError(
                f"There is no pretrained model {weights!r} for {cls.__name__}. "
                f"The available ones are: {sorted(cls.pretrained_models)}."
            )
        init_args = dict(cls.pretrained_models[weights].get("init_args", {}))
        init_args["weights"] = weights
        return cls(**init_args)


class IFreezable(ABC):
    """A model whose backbone can be frozen and unfrozen (e.g. for the first epochs of training)."""

    @abstractmethod
    def freeze(self) -> None:
        raise NotImplementedError

    @abstractmethod
    def unfreeze(self) -> None:
        raise NotImplementedError


class IPairwiseModel(nn.Module):
    """A model that scores pairs of inputs; the output is a distance (bigger means less similar)."""

    def forward(self, x1: Any, x2: Any) -> Tensor:
        """Raw scores used for training (e.g. logits), shape ``[B]``."""
        raise NotImplementedError

    def predict(self, x1: Any, x2: Any) -> Tensor:
        """Scores used at inference (e.g. probabilities), shape ``[B]``."""
        raise NotImplementedError


__all__ = ["IExtractor", "IFreezable", "IPairwiseModel"]
