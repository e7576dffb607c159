"""Labels of any hashable type as integer codes (the one home for it).

Metrics only need to know whether two labels are equal, so labels (ints, strings, numpy scalars, a mix)
are replaced by ``int64`` codes once, with the same code for equal labels across all the arrays given.
"""

from typing import Any, List, Tuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = ["encode_labels"]


def _as_flat_array(labels: Any) -> np.ndarray:
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels) if not isinstance(labels, list) else pd.array(labels, dtype=object).to_numpy()
    return array.ravel()


def encode_labels(*label_arrays: Any) -> Tuple[List[Any], List[Tensor]]:
    """Shared integer codes of several label arrays.

    Args:
        *label_arrays: 1D tensors, arrays or lists of hashable labels.

    Returns:
        ``(classes, codes)``: the distinct labels in order of first appearance, and one ``int64`` tensor of
        codes per input (``classes[code]`` is the label).

    >>> classes, (a, b) = encode_labels(["cat", "dog"], ["dog", "cow", "cat"])
    >>> classes, a.tolist(), b.tolist()
    (['cat', 'dog', 'cow'], [0, 1], [1, 2, 0])
    """
    arrays = [_as_flat_array(labels) for labels in label_arrays]
    lengths = [len(a) for a in arrays]
    joined = np.concatenate(arrays) if arrays else np.zeros(0)
    codes, uniques = pd.factorize(joined, sort=False, use_na_sentinel=False)
    classes = [value.item() if isinstance(value, np.generic) else value for value in np.asarray(uniques).tolist()]
    codes_tensor = torch.from_numpy(codes.astype(np.int64, copy=False))
    return classes, list(torch.split(codes_tensor, lengths))
