from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from oml.utils.dataframe_format import DataFrameFormatError, check_retrieval_dataframe_format


@pytest.fixture()
def valid(tmp_path: Path) -> pd.DataFrame:
    for i in range(8):
        (tmp_path / f"{i}.jpg").write_bytes(b"x")
    return pd.DataFrame(
        {
            "label": [0, 0, 1, 1, 2, 2, 3, 3],
            "path": [f"{i}.jpg" for i in range(8)],
            "split": ["train"] * 4 + ["validation"] * 4,
            "is_query": [None] * 4 + [True, True, True, False],
            "is_gallery": [None] * 4 + [True, True, False, True],
            "category": ["a", "a", "b", "b", "a", "a", "b", "b"],
            "x_1": [0, 1, np.nan, 0, 0, 0, 0, 0],
            "x_2": [5, 6, np.nan, 5, 5, 5, 5, 5],
            "y_1": [0, 2, np.nan, 0, 0, 0, 0, 0],
            "y_2": [5, 7, np.nan, 5, 5, 5, 5, 5],
        }
    )


def test_valid_frame_passes_from_frame_and_csv(valid: pd.DataFrame, tmp_path: Path) -> None:
    check_retrieval_dataframe_format(valid, dataset_root=tmp_path)
    check_retrieval_dataframe_format(valid, dataset_root=str(tmp_path))
    valid.to_csv(tmp_path / "df.csv", index=False, sep=";")
    check_retrieval_dataframe_format(tmp_path / "df.csv", dataset_root=tmp_path, sep=";")


def _set(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
        return df

    return change


INVALID = {
    "empty": (lambda df: df.iloc[:0], "no rows"),
    "missing column": (lambda df: df.drop(columns=["split"]), "obligatory columns ['split']"),
    "bad split": (_set("split", 2, "test"), "rows [2]"),
    "train with is_query": (_set("is_query", 1, True), "'is_query' must be empty for train rows; rows [1]"),
    "non-bool flag": (_set("is_gallery", 5, "maybe"), "'is_gallery' of the validation rows must be True or False"),
    "neither query nor gallery": (
        lambda df: _set("is_gallery", 6, False)(_set("is_query", 6, False)(df)),
        "rows [6] have is_query and is_gallery both False",
    ),
    "float labels": (lambda df: df.assign(label=df["label"] + 0.5), "column 'label' must contain integers"),
    "empty label": (_set("label", 3, np.nan), "'label' has empty values in rows [3]"),
    "empty path": (_set("path", 0, ""), "'path' has empty values in rows [0]"),
    "missing file": (_set("path", 1, "nope.jpg"), "1 image files do not exist"),
    "partial bbox columns": (lambda df: df.drop(columns=["y_2"]), "only ['x_1', 'x_2', 'y_1'] are present"),
    "partial bbox row": (_set("x_1", 0, np.nan), "empty in partial boxes: column 'x_1' in rows [0]"),
    "non-numeric bbox": (_set("y_2", 5, "ten"), "must be numbers; column 'y_2' in rows [5] are not"),
    "non-integer bbox": (_set("x_2", 1, 6.5), "must be integers; column 'x_2' in rows [1]"),
    "negative bbox": (_set("y_1", 3, -1), "must be >= 0; column 'y_1' in rows [3]"),
    "degenerate bbox x": (_set("x_2", 4, 0), "rows [4] have x_1 >= x_2"),
    "degenerate bbox y": (_set("y_1", 7, 5), "rows [7] have y_1 >= y_2"),
    "no validation query": (
        lambda df: df.assign(is_query=[None] * 4 + [False] * 4, is_gallery=[None] * 4 + [True] * 4),
        "has no query: column 'is_query' is False in every validation row",
    ),
    "no validation gallery": (
        lambda df: df.assign(is_gallery=[None] * 4 + [False] * 4, is_query=[None] * 4 + [True] * 4),
        "has no gallery item: column 'is_gallery' is False",
    ),
    "path outside root": (_set("path", 2, "../2.jpg"), "1 paths lead outside dataset_root"),
    "absolute among relative": (_set("path", 3, "/etc/passwd"), "rows [3], paths [/etc/passwd]"),
    "empty category": (_set("category", 7, None), "'category' has empty values in rows [7]"),
}


WITHOUT_MATCH = {
    "query without gallery": (_set("label", 6, 7), "1 validation queries have no gallery item with the same label"),
    "query matched only by itself": (lambda df: _set("is_gallery", 5, False)(df), "labels [2], rows [4]"),
}


@pytest.mark.parametrize("name", list(WITHOUT_MATCH))
def test_queries_without_match_warn_or_raise(name: str, valid: pd.DataFrame, tmp_path: Path) -> None:
    change, expected = WITHOUT_MATCH[name]
    broken = change(valid.copy())
    with pytest.warns(UserWarning, match="distractors") as record:  # scored as misses by the metrics
        check_retrieval_dataframe_format(broken, dataset_root=tmp_path)
    assert expected in str(record[0].message)
    with pytest.raises(DataFrameFormatError) as error:
        check_retrieval_dataframe_format(broken, dataset_root=tmp_path, allow_queries_without_match=False)
    assert expected in str(error.value)


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_frames_raise_with_a_clear_message(name: str, valid: pd.DataFrame, tmp_path: Path) -> None:
    change, expected = INVALID[name]
    broken = change(valid.copy())
    with pytest.raises(DataFrameFormatError) as error:
        check_retrieval_dataframe_format(broken, dataset_root=tmp_path)
    assert expected in str(error.value)
    assert isinstance(error.value, ValueError)


def test_csv_source_is_named_in_the_error(valid: pd.DataFrame, tmp_path: Path) -> None:
    valid.loc[0, "split"] = "test"
    valid.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataFrameFormatError, match="bad.csv: column 'split'"):
        check_retrieval_dataframe_format(tmp_path / "bad.csv", dataset_root=tmp_path)


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(DataFrameFormatError, match="does not exist"):
        check_retrieval_dataframe_format(tmp_path / "nothing.csv")


def test_label_with_several_categories_warns(valid: pd.DataFrame, tmp_path: Path) -> None:
    valid.loc[1, "category"] = "b"
    with pytest.warns(UserWarning, match=r"labels \[0\] belong to several categories"):
        check_retrieval_dataframe_format(valid, dataset_root=tmp_path)


def test_a_link_climbed_out_of_is_outside_the_root(valid: pd.DataFrame, tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    (outside / "inner").mkdir(parents=True)
    (outside / "0.jpg").write_bytes(b"x")
    (root / "link").symlink_to(outside / "inner", target_is_directory=True)
    for i in range(8):
        (tmp_path / f"{i}.jpg").rename(root / f"{i}.jpg")
    valid.loc[0, "path"] = "link/../0.jpg"  # lexically root/0.jpg, but the kernel reads outside/0.jpg
    with pytest.raises(DataFrameFormatError, match=r"1 paths lead outside dataset_root=.*rows \[0\]"):
        check_retrieval_dataframe_format(valid, dataset_root=root)


def test_missing_parents_and_trailing_slashes_are_missing_files(valid: pd.DataFrame, tmp_path: Path) -> None:
    valid.loc[2, "path"] = "no/such/folder/2.jpg"
    valid.loc[5, "path"] = "5.jpg/"
    with pytest.raises(DataFrameFormatError, match=r"2 image files do not exist .*\[no/such/folder/2.jpg, 5.jpg/\]"):
        check_retrieval_dataframe_format(valid, dataset_root=tmp_path)
