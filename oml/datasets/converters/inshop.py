"""DeepFashion In-shop Clothes Retrieval (InShop: 52,712 images, 7,982 items) to the oml tables."""

from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from oml import const
from oml.datasets.converters import common

INSHOP_PROTOCOLS = (common.UNSEEN_CLASSES,)
PARTITION_HEADER = ("image_name", "item_id", "evaluation_status")
BBOX_HEADER = ("image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2")
IMAGE_FOLDERS = ("img_highres", "img")  # the first one present is read, as OML did


def convert_inshop(
    dataset_root: Union[str, Path],
    protocol: str = common.UNSEEN_CLASSES,
    images_folder: Optional[str] = None,
    verbose: bool = True,
) -> common.ConversionSummary:
    """Write ``df.csv`` (and, for ``img/``, ``df_with_bboxes.csv``) of InShop into ``dataset_root``.

    Reads ``list_eval_partition.txt`` and ``list_bbox_inshop.txt`` (a count line, a header line, then
    rows). The label is the number of the item (``id_00000002`` -> 2), the category its clothes folder
    (``img/WOMEN/Dresses/...`` -> ``WOMEN/Dresses``); ``query`` rows are queries only and ``gallery`` rows
    gallery images only. InShop has one protocol, its files' split (disjoint items; zoo figure 0.921);
    ``"shared_classes"`` is refused.

    Args:
        dataset_root: the ``DeepFashion_InShop`` folder.
        protocol: ``"unseen_classes"``, the only one.
        images_folder: ``"img_highres"`` or ``"img"``; by default ``img_highres`` when present (as OML).
            The boxes of ``list_bbox_inshop.txt`` are in the pixels of ``img/``, so ``df_with_bboxes.csv``
            is only written from ``img/`` (the summary says so otherwise).
        verbose: show progress bars.

    Raises:
        RawDataError: a missing file, a wrong count or header, a malformed line, an unknown status or item
            id, an image in one list and not the other, an image listed but absent, a box outside its image.
    """
    common.check_protocol("InShop", protocol, INSHOP_PROTOCOLS)
    root = Path(dataset_root)
    if images_folder is None:
        images_folder = next((f for f in IMAGE_FOLDERS if (root / f).is_dir()), IMAGE_FOLDERS[-1])
    if images_folder not in IMAGE_FOLDERS:
        raise ValueError(f"images_folder must be one of {IMAGE_FOLDERS}, got {images_folder!r}.")

    partition = common.read_text_table(
        common.require_file(root / "list_eval_partition.txt", "the count, the header and one line per image"),
        PARTITION_HEADER,
        header=PARTITION_HEADER,
        count_line=True,
    )
    common.fail_rows(
        partition,
        ~partition["evaluation_status"].isin(["train", "query", "gallery"]),
        "evaluation_status must be train, query or gallery",
        show="evaluation_status",
    )
    item_number = partition["item_id"].str.extract(r"^id_(\d+)$", expand=False)
    common.fail_rows(partition, item_number.isna(), "item_id must look like id_00000002", show="item_id")
    partition[const.LABELS_COLUMN] = item_number.astype(np.int64)
    boxes_file = common.require_file(root / "list_bbox_inshop.txt", "the count, the header and one box per image")
    boxes = common.read_text_table(
        boxes_file,
        BBOX_HEADER,
        ints=["x_1", "y_1", "x_2", "y_2"],
        header=BBOX_HEADER,
        count_line=True,
    )
    boxes = boxes.rename(columns={c: f"box_{c}" for c in BBOX_HEADER[3:]})
    rows = common.join_by_id(partition, boxes, "image_name", right_line="box_line")
    common.fail_rows(
        rows, ~rows["image_name"].str.startswith("img/"), "image_name must start with img/", show="image_name"
    )
    rows[const.PATHS_COLUMN] = images_folder + rows["image_name"].str[len("img") :]
    rows[const.CATEGORIES_COLUMN] = rows["image_name"].str.split("/").str[1:3].str.join("/")
    common.check_paths(rows, root)

    train_items = rows.loc[rows["evaluation_status"] == "train", const.LABELS_COLUMN]
    common.fail_rows(
        rows,
        (rows["evaluation_status"] != "train") & rows[const.LABELS_COLUMN].isin(train_items),
        "the item is also a train item",
        show="item_id",
    )
    status = rows["evaluation_status"]
    rows[const.SPLIT_COLUMN] = np.where(status == "train", "train", "validation")
    rows[const.IS_QUERY_COLUMN] = status == "query"
    rows[const.IS_GALLERY_COLUMN] = status == "gallery"

    notes: List[str] = []
    write_boxes = images_folder == "img"
    if write_boxes:
        for column in (const.X1_COLUMN, const.Y1_COLUMN, const.X2_COLUMN, const.Y2_COLUMN):
            rows[column] = rows[f"box_{column}"]
        widths, heights = common.read_image_sizes(rows, root, verbose)
        rows[const.X2_COLUMN], rows[const.Y2_COLUMN] = common.fit_boxes(
            common.as_source(rows, boxes_file, "box_line"), widths, heights
        )
    else:
        notes.append(
            f"df_with_bboxes.csv not written: the boxes of list_bbox_inshop.txt are in the pixels of img/, the "
            f"images were read from {images_folder}/ (pass images_folder='img' for boxes)"
        )
    names = common.table_names(protocol, common.UNSEEN_CLASSES)
    return common.finish(rows, "InShop", protocol, root, names, write_boxes=write_boxes, notes=notes)


__all__ = ["convert_inshop", "INSHOP_PROTOCOLS"]
