"""Converters of four public benchmarks (CUB-200-2011, Cars196, SOP, DeepFashion InShop) from their published
folders to the oml CSV tables, written next to the images.

Two split protocols (``PROTOCOLS``): ``"shared_classes"`` is OML 0.4.4's split of CUB and Cars (the datasets'
own train/test files, the same classes on both sides), on which the zoo figures were measured, and the
default for these two; ``"unseen_classes"`` is the protocol of metric-learning papers (validation classes
never seen in training), the only one SOP and InShop have (their files already split by classes). The
default protocol writes ``df.csv`` / ``df_with_bboxes.csv`` (the tables the recipes of ``pipelines/`` read);
the other one writes ``df_unseen_classes.csv`` / ``df_with_bboxes_unseen_classes.csv``.

From the shell: ``oml convert {cub,cars,sop,inshop} DATASET_ROOT [--protocol ...]``. Only pandas, numpy,
Pillow (and scipy for Cars) are needed: no Lightning, no Hydra.
"""

from typing import Dict

from oml.datasets.converters.cars import CARS_PROTOCOLS, convert_cars
from oml.datasets.converters.common import (
    PROTOCOLS,
    SHARED_CLASSES,
    UNSEEN_CLASSES,
    ConversionSummary,
    RawDataError,
)
from oml.datasets.converters.cub import CUB_PROTOCOLS, convert_cub
from oml.datasets.converters.inshop import INSHOP_PROTOCOLS, convert_inshop
from oml.datasets.converters.sop import SOP_PROTOCOLS, convert_sop

# name -> (converter, its protocols; the first is its default): what `oml convert` offers
CONVERTERS: Dict[str, tuple] = {
    "cub": (convert_cub, CUB_PROTOCOLS),
    "cars": (convert_cars, CARS_PROTOCOLS),
    "sop": (convert_sop, SOP_PROTOCOLS),
    "inshop": (convert_inshop, INSHOP_PROTOCOLS),
}


__all__ = [
    "CONVERTERS",
    "PROTOCOLS",
    "SHARED_CLASSES",
    "UNSEEN_CLASSES",
    "ConversionSummary",
    "RawDataError",
    "convert_cars",
    "convert_cub",
    "convert_inshop",
    "convert_sop",
]
