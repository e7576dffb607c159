"""Cars196 (Stanford Cars: 16,185 images, 196 classes) from its published folder to the oml tables.

The annotations are MATLAB v5 files, read with ``scipy.io.loadmat`` (scipy comes with albumentations).
"""

from pathlib import Path
from typing import Any, List, Union

import numpy as np
import pandas as pd

from oml import const
from oml.datasets.converters import common

CARS_PROTOCOLS = (common.SHARED_CLASSES, common.UNSEEN_CLASSES)
CARS_N_TRAIN_CLASSES = 98  # papers: classes 1-98 train, 99-196 validation
ANNOTATION_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def _loadmat(path: Path, variable: str) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError as e:  # pragma: no cover - scipy is a dependency of albumentations
        raise ImportError(f"Reading {path} needs scipy: pip install scipy ({e}).") from e
    try:
        content = loadmat(str(path), squeeze_me=True)
    except Exception as e:  # scipy raises several types for a file that is not MATLAB v5
        raise common.RawDataError(f"{path}: cannot read it as a MATLAB v5 .mat file ({e}).") from e
    if variable not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise common.RawDataError(f"{path}: expected the variable {variable!r}, found {found}.")
    return np.atleast_1d(content[variable])


def _as_int(value: Any) -> Any:
    """The integer in a MATLAB scalar, or None when it is not one."""
    number = np.asarray(value)
    if number.shape != () or not np.issubdtype(number.dtype, np.number) or number != np.round(number):
        return None
    return int(number)


def read_annotations(path: Path, folder: str) -> pd.DataFrame:
    """The records of a ``cars_*_annos*.mat`` file: class, box (inclusive corners) and ``folder/fname``."""
    records = _loadmat(path, "annotations")
    missing = [f for f in ANNOTATION_FIELDS if records.dtype.names is None or f not in records.dtype.names]
    if missing:
        raise common.RawDataError(
            f"{path}: the annotations have no fields {missing}; expected {list(ANNOTATION_FIELDS)}."
        )
    rows = pd.DataFrame({name: [_as_int(v) for v in records[name]] for name in ANNOTATION_FIELDS[:-1]})
    rows["fname"] = [v if isinstance(v, str) else None for v in records["fname"]]
    rows[common.SOURCE_FILE] = str(path)
    rows[common.SOURCE_LINE] = [f"annotation {i}" for i in range(1, len(rows) + 1)]
    for name in ANNOTATION_FIELDS[:-1]:
        common.fail_rows(rows, rows[name].isna(), f"{name} must be an integer")
    common.fail_rows(rows, rows["fname"].isna(), "fname must be a file name")
    rows[list(ANNOTATION_FIELDS[:-1])] = rows[list(ANNOTATION_FIELDS[:-1])].astype(np.int64)
    rows[const.PATHS_COLUMN] = folder + "/" + rows["fname"]
    common.fail_rows(
        rows, rows[const.PATHS_COLUMN].duplicated(), "the image is annotated twice", show=const.PATHS_COLUMN
    )
    return rows


def _first_file(root: Path, candidates: List[str], what: str) -> Path:
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    return common.require_file(root / candidates[0], what)


def convert_cars(
    dataset_root: Union[str, Path], protocol: str = common.SHARED_CLASSES, verbose: bool = True
) -> common.ConversionSummary:
    """Write ``df.csv`` and ``df_with_bboxes.csv`` of Cars196 into ``dataset_root`` (``CARS196/``).

    Reads ``devkit/cars_meta.mat`` (class names), ``devkit/cars_train_annos.mat`` and
    ``cars_test_annos_withlabels.mat`` (also looked for in ``devkit/``); images are ``cars_train/<fname>``
    and ``cars_test/<fname>``. The label is the class id (1..196); every validation image is both a query
    and a gallery image. Boxes are inclusive pixel corners: ``x_2 = bbox_x2 + 1`` (clipped to the image,
    since a 1-based corner may equal the width), and a corner further out is an error.

    Args:
        dataset_root: the ``CARS196`` folder.
        protocol: ``"shared_classes"`` (default, OML 0.4.4's split of the zoo figure 0.907: the published
            train/test annotations, every class on both sides) or ``"unseen_classes"`` (papers: classes
            1-98 train, 99-196 validation; tables ``df_unseen_classes.csv``, ``df_with_bboxes_unseen_classes.csv``).
        verbose: show progress bars.

    Raises:
        common.RawDataError: a missing or unreadable file, a record with missing fields, a class id not in
            ``cars_meta.mat``, an image listed but absent, a box outside its image (file and record named).
    """
    common.check_protocol("Cars196", protocol, CARS_PROTOCOLS)
    root = Path(dataset_root)
    meta = _first_file(root, ["devkit/cars_meta.mat", "cars_meta.mat"], "the class names")
    n_classes = len(_loadmat(meta, "class_names"))
    train = read_annotations(
        _first_file(root, ["devkit/cars_train_annos.mat", "cars_train_annos.mat"], "the train annotations"),
        "cars_train",
    )
    test = read_annotations(
        _first_file(
            root,
            ["cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat"],
            "the test annotations with labels",
        ),
        "cars_test",
    )
    rows = pd.concat([train.assign(is_test=False), test.assign(is_test=True)], ignore_index=True)
    common.fail_rows(
        rows,
        ~rows["class"].between(1, n_classes),
        f"class must be one of the {n_classes} classes of {meta.name}",
        show="class",
    )
    common.check_paths(rows, root)

    rows[const.LABELS_COLUMN] = rows["class"]
    widths, heights = common.read_image_sizes(rows, root, verbose)
    rows[const.X1_COLUMN], rows[const.Y1_COLUMN] = rows["bbox_x1"], rows["bbox_y1"]
    rows[const.X2_COLUMN], rows[const.Y2_COLUMN] = rows["bbox_x2"] + 1, rows["bbox_y2"] + 1  # inclusive -> exclusive
    rows[const.X2_COLUMN], rows[const.Y2_COLUMN] = common.fit_boxes(rows, widths, heights)

    is_validation = rows["is_test"] if protocol == common.SHARED_CLASSES else rows["class"] > CARS_N_TRAIN_CLASSES
    return common.finish(
        common.one_vs_rest(rows, is_validation),
        "Cars196",
        protocol,
        root,
        common.table_names(protocol, common.SHARED_CLASSES),
    )


__all__ = ["convert_cars", "read_annotations", "CARS_PROTOCOLS"]
