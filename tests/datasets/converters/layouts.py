"""Miniature copies of the published layouts of CUB-200-2011, Cars196, SOP and InShop, for tests.

Each builder writes a few classes of tiny generated JPEGs and the raw annotation files exactly as the
datasets publish them (text lines, MATLAB v5 files for Cars written with scipy), and returns the truth it
wrote: one record per image, from which the tests derive the expected tables by plain loops.
"""

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from PIL import Image

Record = Dict[str, Any]


def write_image(path: Path, width: int, height: int, label: int, index: int) -> None:
    """A small JPEG: a colour per label, a noise pattern per image (so retrieval on them is not trivial)."""
    base = np.random.RandomState(label).randint(40, 216, size=3)
    noise = np.random.RandomState(10_000 * label + index).randint(-40, 41, size=(height, width, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=80)


def _lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def make_cub(root: Path, classes: Sequence[int] = (1, 2, 3, 101, 102, 103), per_class: int = 4) -> List[Record]:
    """``CUB_200_2011/``: images alternate train/test (``is_training_image`` 1, 0, 1, 0...)."""
    records = []
    for class_id in classes:
        folder = f"{class_id:03d}.Bird_{class_id}"
        for k in range(per_class):
            image_id = len(records) + 1
            width, height = 40 + 2 * k, 32 + k
            rel = f"{folder}/Bird_{class_id}_{k}.jpg"
            write_image(root / "images" / rel, width, height, class_id, k)
            box = (1.5, 2.0, width - 4.0, height - 3.5)  # x y w h, floats as published
            records.append(
                {
                    "image_id": image_id,
                    "rel": rel,
                    "class_id": class_id,
                    "train": k % 2 == 0,
                    "box": box,
                    "size": (width, height),
                }
            )
    _lines(root / "images.txt", [f"{r['image_id']} {r['rel']}" for r in records])
    _lines(root / "image_class_labels.txt", [f"{r['image_id']} {r['class_id']}" for r in records])
    _lines(root / "train_test_split.txt", [f"{r['image_id']} {int(r['train'])}" for r in records])
    _lines(root / "bounding_boxes.txt", [f"{r['image_id']} " + " ".join(map(str, r["box"])) for r in records])
    return records


def _cars_struct(records: List[Record]) -> np.ndarray:
    """A 1 x N MATLAB struct array as in the devkit: 1 x 1 uint16 numbers and a char array per record."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    table = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, r in enumerate(records):
        for name, value in zip(fields[:5], (*r["box"], r["class_id"])):
            table[name][0, i] = np.array([[value]], dtype=np.uint16)
        table["fname"][0, i] = r["fname"]
    return table


def make_cars(root: Path, classes: Sequence[int] = (1, 2, 3, 99, 100, 101), per_class: int = 4) -> List[Record]:
    """``CARS196/``: per class, images 0, 2 go to ``cars_train`` and 1, 3 to ``cars_test`` (inclusive boxes)."""
    from scipy.io import savemat

    records = []
    counters = {"cars_train": 0, "cars_test": 0}
    for class_id in classes:
        for k in range(per_class):
            folder = "cars_train" if k % 2 == 0 else "cars_test"
            counters[folder] += 1
            fname = f"{counters[folder]:05d}.jpg"
            width, height = 50 + k, 30 + 2 * k
            write_image(root / folder / fname, width, height, class_id, k)
            # the last box touches the right border with a 1-based inclusive corner (x2 == width)
            box = (2, 3, width if k == per_class - 1 else width - 5, height - 2)
            records.append(
                {"folder": folder, "fname": fname, "class_id": class_id, "box": box, "size": (width, height)}
            )
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    names = np.empty((1, 196), dtype=object)
    names[0, :] = [f"Make Model {i} 2012" for i in range(1, 197)]
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    for folder, target in (
        ("cars_train", "devkit/cars_train_annos.mat"),
        ("cars_test", "cars_test_annos_withlabels.mat"),
    ):
        savemat(root / target, {"annotations": _cars_struct([r for r in records if r["folder"] == folder])})
    return records


SOP_SUPER = {1: "bicycle_final", 2: "chair_final", 3: "kettle_final"}


def make_sop(root: Path, n_train: int = 9, n_test: int = 6) -> List[Record]:
    """``Stanford_Online_Products/``: classes 1..n_train (3 images each, the last one 1 image) and
    n_train+1..n_train+n_test (2 images each), spread over three super-classes."""
    records = []
    for class_id in range(1, n_train + n_test + 1):
        is_test = class_id > n_train
        n_images = 2 if is_test else (1 if class_id == n_train else 3)
        super_id = 1 + class_id % 3
        for k in range(n_images):
            rel = f"{SOP_SUPER[super_id]}/{100000 + class_id}_{k}.JPG"
            write_image(root / rel, 36, 36, class_id, k)
            records.append(
                {"image_id": len(records) + 1, "class_id": class_id, "super_id": super_id, "rel": rel, "test": is_test}
            )
    header = "image_id class_id super_class_id path"
    for name, is_test in (("Ebay_train.txt", False), ("Ebay_test.txt", True)):
        body = [f"{r['image_id']} {r['class_id']} {r['super_id']} {r['rel']}" for r in records if r["test"] == is_test]
        _lines(root / name, [header, *body])
    return records


INSHOP_TYPES = ("WOMEN/Dresses", "MEN/Denim")


def make_inshop(root: Path, folder: str = "img", n_train: int = 7, n_test: int = 6) -> List[Record]:
    """``DeepFashion_InShop/``: train items with 3 images (the last one 1 image); test items with one query
    and two gallery images; columns padded with runs of spaces as published."""
    records = []
    for item in range(1, n_train + n_test + 1):
        is_test = item > n_train
        statuses = ["query", "gallery", "gallery"] if is_test else (["train"] if item == n_train else ["train"] * 3)
        clothes = INSHOP_TYPES[item % 2]
        for k, status in enumerate(statuses):
            name = f"img/{clothes}/id_{item:08d}/{k:02d}_1_front.jpg"
            write_image(root / (folder + name[3:]), 30, 40, item, k)
            records.append({"name": name, "item": item, "status": status, "clothes": clothes, "box": (1, 2, 25, 38)})
    _lines(
        root / "list_eval_partition.txt",
        [str(len(records)), "image_name item_id evaluation_status"]
        + [f"{r['name']}     id_{r['item']:08d}   {r['status']}" for r in records],
    )
    _lines(
        root / "list_bbox_inshop.txt",
        [str(len(records)), "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2"]
        + [f"{r['name']}   1   1   " + "  ".join(map(str, r["box"])) for r in records],
    )
    return records


MAKERS = {"cub": make_cub, "cars": make_cars, "sop": make_sop, "inshop": make_inshop}
