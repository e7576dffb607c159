"""The benchmark converters on miniature copies of the published layouts: the tables against tables built
row by row from what the layout builders wrote, both protocols, the summaries, and the error cases."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pandas as pd
import pytest

from oml.cli import main
from oml.datasets.converters import (
    SHARED_CLASSES,
    UNSEEN_CLASSES,
    RawDataError,
    convert_cars,
    convert_cub,
    convert_inshop,
    convert_sop,
)
from oml.utils.dataframe_format import check_retrieval_dataframe_format
from tests.datasets.converters.layouts import make_cars, make_cub, make_inshop, make_sop

COLUMNS = ["label", "path", "split", "is_query", "is_gallery"]
BOXES = ["x_1", "x_2", "y_1", "y_2"]


def read_table(path: Path, root: Path) -> pd.DataFrame:
    """A written table, after the format checker accepted it, sorted by path."""
    check_retrieval_dataframe_format(path, dataset_root=root)
    return pd.read_csv(path).sort_values("path").reset_index(drop=True)


def expected_table(rows: List[Dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows).sort_values("path").reset_index(drop=True)
    return df


def assert_table(path: Path, root: Path, expected: List[Dict[str, Any]]) -> None:
    got = read_table(path, root)
    want = expected_table(expected)
    assert list(got.columns) == list(want.columns)
    for column in want.columns:
        if column in ("is_query", "is_gallery"):
            # train rows are empty, validation rows True/False
            got_values = [None if pd.isna(v) else bool(v) for v in got[column]]
            assert got_values == want[column].tolist(), column
        else:
            assert got[column].tolist() == want[column].tolist(), column


@pytest.mark.parametrize("protocol", [SHARED_CLASSES, UNSEEN_CLASSES])
def test_cub(tmp_path: Path, protocol: str) -> None:
    records = make_cub(tmp_path)
    summary = convert_cub(tmp_path, protocol=protocol, verbose=False)
    expected = []
    for r in records:
        is_val = (not r["train"]) if protocol == SHARED_CLASSES else r["class_id"] > 100
        x, y, w, h = r["box"]
        row = {
            "label": r["class_id"],
            "path": f"images/{r['rel']}",
            "split": "validation" if is_val else "train",
            "is_query": True if is_val else None,
            "is_gallery": True if is_val else None,
        }
        boxes = {"x_1": math.floor(x), "x_2": math.ceil(x + w), "y_1": math.floor(y), "y_2": math.ceil(y + h)}
        expected.append({**row, **boxes})
    suffix = "" if protocol == SHARED_CLASSES else "_unseen_classes"
    assert summary.tables == [tmp_path / f"df{suffix}.csv", tmp_path / f"df_with_bboxes{suffix}.csv"]
    assert_table(summary.tables[0], tmp_path, [{k: e[k] for k in COLUMNS} for e in expected])
    assert_table(summary.tables[1], tmp_path, expected)
    n_val = sum(e["split"] == "validation" for e in expected)
    assert summary.rows == {"train": len(records) - n_val, "validation": n_val}
    assert summary.n_queries == summary.n_galleries == n_val
    assert summary.labels == (
        {"train": 6, "validation": 6} if protocol == SHARED_CLASSES else {"train": 3, "validation": 3}
    )
    text = str(summary)
    assert protocol in text and "zoo" in text if protocol == SHARED_CLASSES else "papers" in text


@pytest.mark.parametrize("protocol", [SHARED_CLASSES, UNSEEN_CLASSES])
def test_cars(tmp_path: Path, protocol: str) -> None:
    records = make_cars(tmp_path)
    summary = convert_cars(tmp_path, protocol=protocol, verbose=False)
    expected = []
    for r in records:
        is_val = r["folder"] == "cars_test" if protocol == SHARED_CLASSES else r["class_id"] > 98
        x1, y1, x2, y2 = r["box"]
        width, height = r["size"]
        expected.append(
            {
                "label": r["class_id"],
                "path": f"{r['folder']}/{r['fname']}",
                "split": "validation" if is_val else "train",
                "is_query": True if is_val else None,
                "is_gallery": True if is_val else None,
                # inclusive corners: one past the last pixel, never beyond the image
                "x_1": x1,
                "x_2": min(x2 + 1, width),
                "y_1": y1,
                "y_2": min(y2 + 1, height),
            }
        )
    assert_table(summary.tables[1], tmp_path, expected)
    assert summary.n_categories is None and summary.dropped == {}


def test_sop(tmp_path: Path) -> None:
    records = make_sop(tmp_path)
    summary = convert_sop(tmp_path, verbose=False)
    counts = pd.Series([r["class_id"] for r in records if not r["test"]]).value_counts()
    expected = [
        {
            "label": r["class_id"],
            "path": r["rel"],
            "split": "validation" if r["test"] else "train",
            "is_query": True if r["test"] else None,
            "is_gallery": True if r["test"] else None,
            "category": r["rel"].split("/")[0],
        }
        for r in records
        if r["test"] or counts[r["class_id"]] > 1
    ]
    assert summary.tables == [tmp_path / "df.csv"]  # no boxes in SOP
    assert_table(summary.tables[0], tmp_path, expected)
    assert summary.dropped == {"dropped train images whose label has no other image": 1}
    assert summary.n_categories == 3
    assert "dropped train images whose label has no other image: 1" in str(summary)


@pytest.mark.parametrize("folder", ["img", "img_highres"])
def test_inshop(tmp_path: Path, folder: str) -> None:
    records = make_inshop(tmp_path, folder=folder)
    summary = convert_inshop(tmp_path, verbose=False)
    counts = pd.Series([r["item"] for r in records if r["status"] == "train"]).value_counts()
    expected = []
    for r in records:
        if r["status"] == "train" and counts[r["item"]] == 1:
            continue
        is_val = r["status"] != "train"
        x1, y1, x2, y2 = r["box"]
        expected.append(
            {
                "label": r["item"],
                "path": folder + r["name"][len("img") :],
                "split": "validation" if is_val else "train",
                "is_query": r["status"] == "query" if is_val else None,
                "is_gallery": r["status"] == "gallery" if is_val else None,
                "category": r["clothes"],
                "x_1": x1,
                "x_2": x2,
                "y_1": y1,
                "y_2": y2,
            }
        )
    assert_table(tmp_path / "df.csv", tmp_path, [{k: v for k, v in e.items() if k not in BOXES} for e in expected])
    if folder == "img":
        assert_table(tmp_path / "df_with_bboxes.csv", tmp_path, expected)
    else:  # the boxes are in the pixels of img/: not applied to img_highres/
        assert summary.tables == [tmp_path / "df.csv"] and "df_with_bboxes.csv not written" in str(summary)
    assert summary.n_queries == 6 and summary.n_galleries == 12 and summary.n_categories == 2


def test_one_vs_rest_label_with_one_image_stays_in_the_gallery(tmp_path: Path) -> None:
    make_cub(tmp_path)
    lines = (tmp_path / "train_test_split.txt").read_text().splitlines()
    lines[1] = lines[1].replace(" 0", " 1")  # class 1 keeps a single validation image
    (tmp_path / "train_test_split.txt").write_text("\n".join(lines) + "\n")
    summary = convert_cub(tmp_path, verbose=False)
    df = read_table(tmp_path / "df.csv", tmp_path)
    row = df[(df["label"] == 1) & (df["split"] == "validation")]
    assert len(row) == 1 and not row["is_query"].iloc[0] and row["is_gallery"].iloc[0]
    assert summary.dropped == {"validation images kept as gallery only (no other image of their label)": 1}


def test_a_box_one_pixel_past_the_image_is_clipped(tmp_path: Path) -> None:
    records = make_cub(tmp_path)
    width, height = records[2]["size"]
    edit_line(tmp_path / "bounding_boxes.txt", 3, f"3 0.0 1.0 {width + 0.6} {height - 1.0}")  # right edge W + 0.6
    convert_cub(tmp_path, verbose=False)
    df = read_table(tmp_path / "df_with_bboxes.csv", tmp_path)
    row = df[df["path"] == f"images/{records[2]['rel']}"].iloc[0]
    assert (row["x_1"], row["x_2"], row["y_1"], row["y_2"]) == (0, width, 1, height)
    edit_line(tmp_path / "bounding_boxes.txt", 3, f"3 0.0 1.0 {width + 1.2} {height - 1.0}")  # two pixels out
    with pytest.raises(RawDataError, match=r"bounding_boxes.txt, line 3: the box .* is outside"):
        convert_cub(tmp_path, verbose=False)


def test_inshop_query_without_gallery_is_dropped(tmp_path: Path) -> None:
    make_inshop(tmp_path)
    for name in ("list_eval_partition.txt", "list_bbox_inshop.txt"):  # item 13 loses its two gallery images
        lines = [
            line for line in (tmp_path / name).read_text().splitlines() if not re.search(r"id_00000013/0[12]_", line)
        ]
        lines[0] = str(len(lines) - 2)
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    summary = convert_inshop(tmp_path, verbose=False)
    assert summary.dropped["dropped queries without a gallery image of their label"] == 1
    assert 13 not in read_table(tmp_path / "df.csv", tmp_path)["label"].tolist()


def edit_line(path: Path, number: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


def drop_line(path: Path, number: int) -> None:
    lines = path.read_text().splitlines()
    del lines[number - 1]
    path.write_text("\n".join(lines) + "\n")


def link_outside(link: Path) -> None:
    """A link to a folder next to the dataset root holding ``x.jpg``: ``link/../x.jpg`` reads that one."""
    outside = link.parents[1].parent / f"outside_{link.parents[1].name}"
    (outside / "inner").mkdir(parents=True)
    (outside / "x.jpg").write_bytes(b"x")
    link.symlink_to(outside / "inner", target_is_directory=True)


def rewrite_cars_record(root: Path, index: int, **values: Any) -> None:
    from scipy.io import loadmat, savemat

    path = root / "devkit" / "cars_train_annos.mat"
    annotations = loadmat(str(path))["annotations"]
    for name, value in values.items():
        annotations[name][0, index] = value
    savemat(path, {"annotations": annotations})


def drop_cars_field(root: Path, field: str) -> None:
    from scipy.io import loadmat, savemat

    path = root / "cars_test_annos_withlabels.mat"
    annotations = loadmat(str(path))["annotations"]
    kept = [name for name in annotations.dtype.names if name != field]
    table = np.zeros(annotations.shape, dtype=[(name, "O") for name in kept])
    for name in kept:
        table[name] = annotations[name]
    savemat(path, {"annotations": table})


# (builder, converter, how the layout is broken, what the message must say)
ERROR_CASES: Dict[str, tuple] = {
    "cub-missing-file": (
        make_cub,
        convert_cub,
        lambda r: (r / "bounding_boxes.txt").unlink(),
        ["bounding_boxes.txt: the file is missing"],
    ),
    "cub-malformed-line": (
        make_cub,
        convert_cub,
        lambda r: edit_line(r / "images.txt", 5, "5 a b"),
        ["images.txt, line 5: expected 2 columns"],
    ),
    "cub-not-a-number": (
        make_cub,
        convert_cub,
        lambda r: edit_line(r / "image_class_labels.txt", 3, "3 three"),
        ["image_class_labels.txt, line 3: column 'class_id' must be an integer"],
    ),
    "cub-bad-flag": (
        make_cub,
        convert_cub,
        lambda r: edit_line(r / "train_test_split.txt", 2, "2 7"),
        ["train_test_split.txt, line 2: is_training_image must be 0 or 1"],
    ),
    "cub-id-missing-in-a-file": (
        make_cub,
        convert_cub,
        lambda r: drop_line(r / "image_class_labels.txt", 4),
        ["images.txt, line 4: image_id is not listed in", "image_class_labels.txt (image_id=4)"],
    ),
    "cub-id-only-in-a-file": (
        make_cub,
        convert_cub,
        lambda r: edit_line(r / "bounding_boxes.txt", 6, "999 1 1 5 5"),
        ["images.txt, line 6: image_id is not listed in", "bounding_boxes.txt"],
    ),
    "cub-repeated-id": (
        make_cub,
        convert_cub,
        lambda r: edit_line(r / "images.txt", 2, "1 001.Bird_1/Bird_1_0.jpg"),
        ["images.txt, line 2: image_id is repeated"],
    ),
    "cub-image-absent": (
        make_cub,
        convert_cub,
        lambda r: (r / "images" / "002.Bird_2" / "Bird_2_1.jpg").unlink(),
        ["images.txt, line 6: the image does not exist", "images/002.Bird_2/Bird_2_1.jpg"],
    ),
    "cub-path-escapes": (
        make_cub,
        convert_cub,
        lambda r: edit_line(r / "images.txt", 1, "1 ../../etc/passwd"),
        ["images.txt, line 1: the image path must be relative and stay inside the dataset root"],
    ),
    "cub-path-escapes-through-a-link": (
        make_cub,
        convert_cub,
        lambda r: link_outside(r / "images" / "shortcut") or edit_line(r / "images.txt", 2, "2 shortcut/../x.jpg"),
        ["images.txt, line 2: the image path must be relative and stay inside the dataset root"],
    ),
    "cub-box-outside": (
        make_cub,
        convert_cub,
        lambda r: edit_line(r / "bounding_boxes.txt", 3, "3 10.0 2.0 300.0 20.0"),
        ["bounding_boxes.txt, line 3: the box (x_1=10, y_1=2, x_2=310, y_2=22) is outside the 44x34 image"],
    ),
    "cars-missing-file": (
        make_cars,
        convert_cars,
        lambda r: (r / "cars_test_annos_withlabels.mat").unlink(),
        ["cars_test_annos_withlabels.mat: the file is missing"],
    ),
    "cars-not-a-mat-file": (
        make_cars,
        convert_cars,
        lambda r: (r / "devkit" / "cars_meta.mat").write_text("class names"),
        ["cars_meta.mat: cannot read it as a MATLAB v5 .mat file"],
    ),
    "cars-unknown-class": (
        make_cars,
        convert_cars,
        lambda r: rewrite_cars_record(r, 2, **{"class": np.array([[250]], dtype=np.uint16)}),
        ["cars_train_annos.mat, annotation 3: class must be one of the 196 classes of cars_meta.mat (class=250)"],
    ),
    "cars-image-absent": (
        make_cars,
        convert_cars,
        lambda r: (r / "cars_test" / "00004.jpg").unlink(),
        ["cars_test_annos_withlabels.mat, annotation 4: the image does not exist", "cars_test/00004.jpg"],
    ),
    "cars-box-outside": (
        make_cars,
        convert_cars,
        lambda r: rewrite_cars_record(r, 0, bbox_y2=np.array([[90]], dtype=np.uint16)),
        ["cars_train_annos.mat, annotation 1: the box", "is outside the 50x30 image"],
    ),
    "cars-missing-field": (
        make_cars,
        convert_cars,
        lambda r: drop_cars_field(r, "class"),
        ["cars_test_annos_withlabels.mat: the annotations have no fields ['class']"],
    ),
    "sop-super-class-in-two-folders": (
        make_sop,
        convert_sop,
        lambda r: edit_line(r / "Ebay_train.txt", 2, "1 1 3 chair_final/100001_0.JPG"),
        ["Ebay_train.txt, line 2: images of one super_class_id lie in several folders (super_class_id=3)"],
    ),
    "sop-wrong-header": (
        make_sop,
        convert_sop,
        lambda r: edit_line(r / "Ebay_test.txt", 1, "image_id class_id path"),
        ["Ebay_test.txt, line 1: expected the header 'image_id class_id super_class_id path'"],
    ),
    "sop-malformed-line": (
        make_sop,
        convert_sop,
        lambda r: edit_line(r / "Ebay_train.txt", 3, "2 1 2"),
        ["Ebay_train.txt, line 3: expected 4 columns"],
    ),
    "sop-product-in-both-files": (
        make_sop,
        convert_sop,
        lambda r: edit_line(r / "Ebay_train.txt", 2, "1 10 2 chair_final/100001_0.JPG"),
        ["Ebay_train.txt, line 2: the product is also in Ebay_test.txt"],
    ),
    "sop-image-absent": (
        make_sop,
        convert_sop,
        lambda r: (r / "chair_final" / "100001_1.JPG").unlink(),
        ["Ebay_train.txt, line 3: the image does not exist"],
    ),
    "inshop-wrong-count": (
        make_inshop,
        convert_inshop,
        lambda r: edit_line(r / "list_eval_partition.txt", 1, "7"),
        ["list_eval_partition.txt, line 1: the file declares 7 rows but holds 37"],
    ),
    "inshop-bad-status": (
        make_inshop,
        convert_inshop,
        lambda r: edit_line(
            r / "list_eval_partition.txt", 4, "img/WOMEN/Dresses/id_00000002/01_1_front.jpg id_00000002 test"
        ),
        ["list_eval_partition.txt, line 4: evaluation_status must be train, query or gallery"],
    ),
    "inshop-bad-item": (
        make_inshop,
        convert_inshop,
        lambda r: edit_line(
            r / "list_eval_partition.txt", 4, "img/WOMEN/Dresses/id_00000002/01_1_front.jpg item2 train"
        ),
        ["list_eval_partition.txt, line 4: item_id must look like id_00000002"],
    ),
    "inshop-image-without-box": (
        make_inshop,
        convert_inshop,
        lambda r: edit_line(
            r / "list_bbox_inshop.txt", 5, "img/WOMEN/Dresses/id_00000002/09_1_front.jpg 1 1 1 2 25 38"
        ),
        ["list_eval_partition.txt, line 5: image_name is not listed in", "list_bbox_inshop.txt"],
    ),
    "inshop-box-outside": (
        make_inshop,
        convert_inshop,
        lambda r: edit_line(r / "list_bbox_inshop.txt", 3, "img/MEN/Denim/id_00000001/00_1_front.jpg 1 1 1 2 25 42"),
        ["list_bbox_inshop.txt, line 3: the box (x_1=1, y_1=2, x_2=25, y_2=42) is outside the 30x40 image"],
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_name_the_file_and_line(tmp_path: Path, case: str) -> None:
    make, convert, break_layout, messages = ERROR_CASES[case]
    make(tmp_path)
    break_layout(tmp_path)
    with pytest.raises(RawDataError) as error:
        convert(tmp_path, verbose=False)
    for message in messages:
        assert message in str(error.value)
    assert not (tmp_path / "df.csv").exists(), "nothing is written from a broken layout"


@pytest.mark.parametrize("convert", [convert_sop, convert_inshop])
def test_protocols_that_a_dataset_does_not_have_are_refused(tmp_path: Path, convert: Callable) -> None:
    with pytest.raises(ValueError, match="has no protocol 'shared_classes'. Available: 'unseen_classes'"):
        convert(tmp_path, protocol=SHARED_CLASSES)


def test_oml_convert_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_cub(tmp_path / "CUB_200_2011")
    main(["convert", "cub", str(tmp_path / "CUB_200_2011"), "--protocol", "unseen_classes"])
    out = capsys.readouterr().out
    assert "protocol 'unseen_classes'" in out and "df_with_bboxes_unseen_classes.csv" in out
    assert "train: 12 images of 3 labels" in out and "queries: 12, gallery images: 12" in out
    with pytest.raises(SystemExit, match=r"oml convert cars: .*cars_meta.mat: the file is missing"):
        main(["convert", "cars", str(tmp_path / "CUB_200_2011")])


def test_converters_import_without_lightning_and_hydra() -> None:
    code = (
        "import sys, oml.datasets.converters; "
        "heavy = ('pytorch_lightning', 'lightning', 'hydra', 'omegaconf'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_oml_convert_defaults_are_the_functions_defaults() -> None:
    import inspect

    from oml.datasets.converters import CONVERTERS

    for converter, protocols in CONVERTERS.values():
        assert inspect.signature(converter).parameters["protocol"].default == protocols[0]
    assert CONVERTERS["cub"][1][0] == CONVERTERS["cars"][1][0] == SHARED_CLASSES  # the zoo's split


def test_images_are_checked_by_one_listing_not_one_stat_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = make_sop(tmp_path, n_train=30, n_test=20)  # over 40 images per folder: listing them pays
    calls: List[str] = []
    original = os.stat  # Path.stat, Path.is_file and os.path.isfile call it too
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: calls.append(str(path)) or original(path, *a, **k))
    convert_sop(tmp_path, verbose=False)
    # the two list files, the written table and its folder: a check per image would add 128 more
    assert len(records) == 128 and len(calls) <= 10, calls


def test_images_in_a_linked_folder_are_found(tmp_path: Path) -> None:
    """A class folder that is a symbolic link (images kept on another disk) holds its images; the former
    walk of the image folders did not follow it and called them absent."""
    root = tmp_path / "CUB_200_2011"
    records = make_cub(root)
    folder = root / "images" / "002.Bird_2"
    folder.rename(tmp_path / "other_disk")
    folder.symlink_to(tmp_path / "other_disk", target_is_directory=True)
    summary = convert_cub(root, verbose=False)
    assert sum(summary.rows.values()) == len(records)
