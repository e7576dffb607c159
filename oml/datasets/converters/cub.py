"""CUB-200-2011 (birds: 11,788 images, 200 classes) from its published folder to the oml tables."""

from pathlib import Path
from typing import Union

import numpy as np

from oml import const
from oml.datasets.converters import common

CUB_PROTOCOLS = (common.SHARED_CLASSES, common.UNSEEN_CLASSES)
CUB_N_TRAIN_CLASSES = 100  # papers: classes 1-100 train, 101-200 validation


def convert_cub(
    dataset_root: Union[str, Path], protocol: str = common.SHARED_CLASSES, verbose: bool = True
) -> common.ConversionSummary:
    """Write ``df.csv`` and ``df_with_bboxes.csv`` of CUB-200-2011 into ``dataset_root`` (``CUB_200_2011/``).

    Reads ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt`` and ``bounding_boxes.txt``
    as published; the label is the class id (1..200) and every validation image is both a query and a
    gallery image. Boxes ``x y width height`` (float pixels) become the smallest integer box holding them
    (an edge one pixel past the image is clipped, see ``common.fit_boxes``).

    Args:
        dataset_root: the ``CUB_200_2011`` folder.
        protocol: ``"shared_classes"`` (default, OML 0.4.4's split of the zoo figure 0.837: the
            ``train_test_split.txt`` of the dataset, every class on both sides) or ``"unseen_classes"``
            (papers: classes 1-100 train, 101-200 validation); the latter's tables are named
            ``df_unseen_classes.csv`` and ``df_with_bboxes_unseen_classes.csv``.
        verbose: show progress bars.

    Raises:
        RawDataError: a missing file, a malformed line, an image id missing from one of the files, an image
            listed but absent, a box outside its image; the message names the file and line.
    """
    common.check_protocol("CUB-200-2011", protocol, CUB_PROTOCOLS)
    root = Path(dataset_root)
    images = common.read_text_table(
        common.require_file(root / "images.txt", "'<image_id> <path under images/>' lines"),
        ["image_id", "path"],
        ["image_id"],
    )
    labels = common.read_text_table(
        common.require_file(root / "image_class_labels.txt", "'<image_id> <class_id>' lines"),
        ["image_id", "class_id"],
        ["image_id", "class_id"],
    )
    split = common.read_text_table(
        common.require_file(root / "train_test_split.txt", "'<image_id> <is_training_image>' lines"),
        ["image_id", "is_training_image"],
        ["image_id", "is_training_image"],
    )
    common.fail_rows(
        split, ~split["is_training_image"].isin([0, 1]), "is_training_image must be 0 or 1", "is_training_image"
    )
    boxes_file = common.require_file(root / "bounding_boxes.txt", "'<image_id> <x> <y> <width> <height>' lines")
    boxes = common.read_text_table(
        boxes_file,
        ["image_id", "x", "y", "width", "height"],
        ints=["image_id"],
        floats=["x", "y", "width", "height"],
    )
    rows = common.join_by_id(common.join_by_id(images, labels, "image_id"), split, "image_id")
    rows = common.join_by_id(rows, boxes, "image_id", right_line="box_line")

    rows[const.PATHS_COLUMN] = "images/" + rows["path"]
    rows[const.LABELS_COLUMN] = rows["class_id"]
    common.check_paths(rows, root)

    rows[const.X1_COLUMN] = np.floor(rows["x"]).astype(np.int64)
    rows[const.Y1_COLUMN] = np.floor(rows["y"]).astype(np.int64)
    rows[const.X2_COLUMN] = np.ceil(rows["x"] + rows["width"]).astype(np.int64)
    rows[const.Y2_COLUMN] = np.ceil(rows["y"] + rows["height"]).astype(np.int64)
    widths, heights = common.read_image_sizes(rows, root, verbose)
    rows[const.X2_COLUMN], rows[const.Y2_COLUMN] = common.fit_boxes(
        common.as_source(rows, boxes_file, "box_line"), widths, heights
    )

    if protocol == common.SHARED_CLASSES:
        is_validation = rows["is_training_image"] == 0
    else:
        is_validation = rows["class_id"] > CUB_N_TRAIN_CLASSES
    rows = common.one_vs_rest(rows, is_validation)
    return common.finish(rows, "CUB-200-2011", protocol, root, common.table_names(protocol, common.SHARED_CLASSES))


__all__ = ["convert_cub", "CUB_PROTOCOLS"]
