"""Stanford Online Products (SOP: 120,053 images, 22,634 products, 12 super-classes) to the oml tables."""

from pathlib import Path
from typing import Union

import pandas as pd

from oml import const
from oml.datasets.converters import common

SOP_PROTOCOLS = (common.UNSEEN_CLASSES,)
SOP_HEADER = ("image_id", "class_id", "super_class_id", "path")


def convert_sop(
    dataset_root: Union[str, Path], protocol: str = common.UNSEEN_CLASSES, verbose: bool = True
) -> common.ConversionSummary:
    """Write ``df.csv`` of SOP into ``dataset_root`` (``Stanford_Online_Products/``).

    Reads ``Ebay_train.txt`` and ``Ebay_test.txt`` (header ``image_id class_id super_class_id path``); the
    label is the product (``class_id``), the category the super-class folder of the path (e.g.
    ``bicycle_final``); every validation image is both a query and a gallery image. SOP has one protocol,
    its files' split (products 1-11,318 train, 11,319-22,634 validation, disjoint), which OML 0.4.4 and
    the papers both used (zoo figure 0.866); ``"shared_classes"`` is refused. ``verbose`` has nothing to
    show here (no image is opened), it is taken so that every converter has the same signature.

    Raises:
        RawDataError: a missing file, a wrong header, a malformed line, a repeated image id, a product in
            both files, a super-class id that disagrees with the folder, an image listed but absent.
    """
    common.check_protocol("SOP", protocol, SOP_PROTOCOLS)
    root = Path(dataset_root)
    parts = []
    for name, is_test in (("Ebay_train.txt", False), ("Ebay_test.txt", True)):
        path = common.require_file(root / name, f"the header {' '.join(SOP_HEADER)!r} and one line per image")
        parts.append(
            common.read_text_table(path, SOP_HEADER, ints=SOP_HEADER[:3], header=SOP_HEADER).assign(is_test=is_test)
        )
    rows = pd.concat(parts, ignore_index=True)
    common.check_unique(rows, const.PATHS_COLUMN)
    test_classes = rows.loc[rows["is_test"], "class_id"]
    common.fail_rows(
        rows, ~rows["is_test"] & rows["class_id"].isin(test_classes), "the product is also in Ebay_test.txt", "class_id"
    )
    common.check_paths(rows, root)

    rows[const.LABELS_COLUMN] = rows["class_id"]
    rows[const.CATEGORIES_COLUMN] = rows[const.PATHS_COLUMN].str.split("/", n=1).str[0]
    folders_per_id = rows.groupby("super_class_id")[const.CATEGORIES_COLUMN].transform("nunique")
    common.fail_rows(
        rows, folders_per_id > 1, "images of one super_class_id lie in several folders", show="super_class_id"
    )
    return common.finish(
        common.one_vs_rest(rows, rows["is_test"]),
        "SOP",
        protocol,
        root,
        common.table_names(protocol, common.UNSEEN_CLASSES),
    )


__all__ = ["convert_sop", "SOP_PROTOCOLS"]
