"""Interface of losses that mine their own triplets."""

from torch import Tensor, nn

from oml.interfaces.miners import TLabels


class ITripletLossWithMiner(nn.Module):
    """A loss computed from a batch of features and labels (mining happens inside)."""

    def forward(self, features: Tensor, labels: TLabels) -> Tensor:
        raise NotImplementedError


__all__ = ["ITripletLossWithMiner"]
