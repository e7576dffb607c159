"""The dataset CSV format and its checker.

A dataset is a table with one row per image:

=============  ==============================================================
column         meaning
=============  ==============================================================
label          int, the id of the entity (product, person, ...) on the image
path           image path relative to ``dataset_root`` (and inside it), or absolute in every row
split          ``train`` or ``validation``
is_query       validation rows: True/False; train rows: empty
is_gallery     validation rows: True/False; train rows: empty
category       (optional) a group of labels, e.g. ``jackets``
x_1,x_2,y_1,y_2 (optional) integer box: left, right, top, bottom; empty = whole image
=============  ==============================================================
"""

import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd

from oml.const import (
    BBOXES_COLUMNS,
    CATEGORIES_COLUMN,
    IS_GALLERY_COLUMN,
    IS_QUERY_COLUMN,
    LABELS_COLUMN,
    OBLIGATORY_COLUMNS,
    PATHS_COLUMN,
    SPLIT_COLUMN,
    X1_COLUMN,
    X2_COLUMN,
    Y1_COLUMN,
    Y2_COLUMN,
)
from oml.utils.paths import missing_files, paths_outside_root

_SHOW = 10
_SPLITS = ("train", "validation")


class DataFrameFormatError(ValueError):
    """A dataset table breaks a rule of the format (the message names the rule, column and rows)."""


def _preview(values: Iterable[Any]) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:_SHOW]))
    return f"[{shown}{', ...' if len(values) > _SHOW else ''}]"


def _fail(source: str, message: str) -> None:
    raise DataFrameFormatError(f"{source}: {message}")


def _as_bool_column(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    """Validation flags: True/False, 1/0 or 'True'/'False' strings (as pandas reads CSVs)."""
    # 1/0 (and 1.0/0.0) hash like True/False, so they are accepted too
    mapping = {True: True, False: False, "True": True, "False": False, "true": True, "false": False}
    values = df[column]
    bad = [
        i
        for i, v in zip(df.index, values)
        if not (isinstance(v, (bool, np.bool_, int, np.integer, float, str)) and v in mapping)
    ]
    if bad:
        _fail(
            source,
            f"column {column!r} of the validation rows must be True or False; {len(bad)} rows are not, "
            f"rows {_preview(bad)} (values {_preview(values.loc[bad].tolist())}).",
        )
    return values.map(lambda v: mapping[v]).astype(bool)


def check_retrieval_dataframe_format(
    df: Union[Path, str, pd.DataFrame],
    dataset_root: Optional[Union[Path, str]] = None,
    sep: str = ",",
    verbose: bool = True,
    allow_paths_outside_root: bool = False,
    allow_queries_without_match: bool = True,
) -> None:
    """Check that a dataset table follows the format; raise ``DataFrameFormatError`` at the first violation.

    Rules: the obligatory columns exist; ``split`` is ``train`` or ``validation``; train rows have empty
    ``is_query``/``is_gallery``; validation rows have boolean flags and are a query, a gallery item or
    both, and a validation split has at least one query and one gallery item; labels are integers; paths
    are non-empty; paths stay inside
    ``dataset_root`` (see ``check_paths_inside_root``); every image exists under ``dataset_root``; bounding
    boxes are all four columns, integer, non-negative and with ``x_1 < x_2``, ``y_1 < y_2`` (errors name
    the column). A label with several categories only gives a warning (when ``verbose``).

    OML 0.4.4 raised a bare ``AssertionError``; ours is a ``ValueError`` subclass that names the rule,
    the column and the first offending rows (0-based positions of the data rows), labels or paths.
    OML also let a query through whose only same-label gallery item was itself, or a validation split
    without queries, which then failed deep inside validation, after the first training epoch; here they
    are caught by the format check. OML read ``../../x.jpg`` or ``/etc/passwd`` from a table of relative
    paths; here such paths are refused unless ``allow_paths_outside_root=True``.

    Args:
        df: a DataFrame or the path of a CSV file.
        dataset_root: folder that relative paths are resolved against (default: as they are).
        sep: CSV separator, when ``df`` is a path.
        verbose: warn about labels that belong to several categories.
        allow_paths_outside_root: accept relative paths that leave ``dataset_root`` (``../x.jpg``) and
            absolute paths in a table of relative ones (by default they are errors).
        allow_queries_without_match: a query without any gallery item of its label (other than itself) is a
            distractor (product search, open-set re-id): by default it gives a warning and is scored as a miss by
            the metrics; ``False`` makes it an error, as in the first versions of oml.

    >>> frame = pd.DataFrame({"label": [0, 0], "path": ["a.jpg", "b.jpg"], "split": ["train", "train"],
    ...                       "is_query": [None, None], "is_gallery": [None, None]})
    >>> check_retrieval_dataframe_format(frame, dataset_root="/nonexistent")
    Traceback (most recent call last):
    ...
    oml.utils.dataframe_format.DataFrameFormatError: dataframe: 2 image files do not exist ...
    """
    if isinstance(df, (str, Path)):
        source = str(df)
        if not Path(df).is_file():
            _fail(source, "the file does not exist.")
        df = pd.read_csv(df, sep=sep)
    else:
        source = "dataframe"
    check_dataframe(
        df,
        source,
        dataset_root,
        verbose=verbose,
        allow_paths_outside_root=allow_paths_outside_root,
        allow_queries_without_match=allow_queries_without_match,
    )


def check_dataframe(
    df: pd.DataFrame,
    source: str,
    dataset_root: Optional[Union[Path, str]] = None,
    verbose: bool = True,
    allow_paths_outside_root: bool = False,
    allow_queries_without_match: bool = True,
) -> None:
    """``check_retrieval_dataframe_format`` of a table already read; ``source`` names it in the messages."""
    df = df.reset_index(drop=True)

    if len(df) == 0:
        _fail(source, "the table has no rows.")

    missing = [c for c in OBLIGATORY_COLUMNS if c not in df.columns]
    if missing:
        _fail(source, f"obligatory columns {missing} are missing; the table has columns {list(df.columns)}.")

    bad_split = df.index[~df[SPLIT_COLUMN].isin(_SPLITS)].tolist()
    if bad_split:
        _fail(
            source,
            f"column 'split' must be 'train' or 'validation'; rows {_preview(bad_split)} have "
            f"{_preview(df.loc[bad_split, SPLIT_COLUMN].unique().tolist())}.",
        )

    train = df[df[SPLIT_COLUMN] == "train"]
    for column in (IS_QUERY_COLUMN, IS_GALLERY_COLUMN):
        filled = train.index[train[column].notna()].tolist()
        if filled:
            _fail(source, f"column {column!r} must be empty for train rows; rows {_preview(filled)} are filled.")

    val = df[df[SPLIT_COLUMN] == "validation"]
    if len(val):
        is_query = _as_bool_column(val, IS_QUERY_COLUMN, source)
        is_gallery = _as_bool_column(val, IS_GALLERY_COLUMN, source)
        neither = val.index[~is_query & ~is_gallery].tolist()
        if neither:
            _fail(
                source,
                f"every validation row must be a query, a gallery item or both; rows {_preview(neither)} "
                f"have is_query and is_gallery both False.",
            )
        for flags, column, role in (
            (is_query, IS_QUERY_COLUMN, "query"),
            (is_gallery, IS_GALLERY_COLUMN, "gallery item"),
        ):
            if not flags.any():
                _fail(
                    source,
                    f"the validation split ({len(val)} rows) has no {role}: column {column!r} is False in every "
                    f"validation row, so validation would fail after the first training epoch.",
                )

    if df[LABELS_COLUMN].isna().any():
        _fail(source, f"column 'label' has empty values in rows {_preview(df.index[df[LABELS_COLUMN].isna()])}.")
    bad_labels = (
        []
        if pd.api.types.is_integer_dtype(df[LABELS_COLUMN])
        else [
            i
            for i, v in zip(df.index, df[LABELS_COLUMN])
            if isinstance(v, bool) or not isinstance(v, (int, np.integer))
        ]
    )
    if bad_labels:
        _fail(
            source,
            f"column 'label' must contain integers (dtype {df[LABELS_COLUMN].dtype}); rows {_preview(bad_labels)} "
            f"have {_preview(df.loc[bad_labels, LABELS_COLUMN].tolist())}.",
        )

    paths_ok = df[PATHS_COLUMN].map(lambda p: isinstance(p, (str, Path)) and str(p).strip() != "")
    if not paths_ok.all():
        _fail(source, f"column 'path' has empty values in rows {_preview(df.index[~paths_ok])}.")

    if len(val):
        _check_queries_have_gallery(val, is_query, is_gallery, source, allow_queries_without_match)

    paths = [str(p) for p in df[PATHS_COLUMN].tolist()]
    if dataset_root is not None:
        check_paths_inside_root(paths, dataset_root, allow_paths_outside_root, source)
    missing = [paths[i] for i in missing_files(paths, dataset_root)]
    if missing:
        root = Path(dataset_root) if dataset_root is not None else Path("")
        _fail(
            source,
            f"{len(missing)} image files do not exist under dataset_root={str(root)!r}: {_preview(missing)}.",
        )

    _check_bboxes(df, source)

    if CATEGORIES_COLUMN in df.columns:
        if df[CATEGORIES_COLUMN].isna().any():
            _fail(
                source,
                f"column 'category' has empty values in rows {_preview(df.index[df[CATEGORIES_COLUMN].isna()])}.",
            )
        n_categories = df.groupby(LABELS_COLUMN)[CATEGORIES_COLUMN].nunique()
        ambiguous = n_categories.index[n_categories > 1].tolist()
        if ambiguous and verbose:
            warnings.warn(
                f"{source}: labels {_preview(ambiguous)} belong to several categories; per-category metrics and "
                f"category samplers assume one category per label.",
                stacklevel=2,
            )


def check_paths_inside_root(
    paths: Iterable[Any],
    dataset_root: Union[Path, str],
    allow_paths_outside_root: bool = False,
    source: str = "dataframe",
    rows: Optional[Sequence[Any]] = None,
) -> None:
    """Refuse image paths that would read files outside ``dataset_root``, naming the table, the row and the path.

    A table is either made of paths relative to ``dataset_root`` that stay inside it (``images/a.jpg``,
    not ``../../x.jpg``), or made of absolute paths only (then ``dataset_root`` does not change them). Which
    paths leave the root is ``oml.utils.paths.paths_outside_root``'s answer: ``..`` is resolved as the file
    system resolves it, symbolic links inside the root are followed (where they lead is the owner's choice),
    and paths without ``..`` touch no file.

    Args:
        paths: the ``path`` column.
        dataset_root: the folder the relative paths are read from.
        allow_paths_outside_root: accept relative paths that leave the root and absolute paths mixed with
            relative ones.
        source: the table, for the message.
        rows: the row of each path, for the message (default: 0-based positions).

    Raises:
        DataFrameFormatError: naming the first offending rows and their paths.
    """
    if allow_paths_outside_root:
        return
    paths = [str(p) for p in paths]
    rows = list(rows) if rows is not None else list(range(len(paths)))
    outside = paths_outside_root(paths, dataset_root)
    absolute = [i for i in outside if os.path.isabs(paths[i])]
    if len(absolute) == len(paths):
        return
    if absolute:
        _fail(
            source,
            f"{len(absolute)} of the {len(paths)} paths are absolute while the others are relative to "
            f"dataset_root={str(dataset_root)!r}: rows {_preview([rows[i] for i in absolute])}, paths "
            f"{_preview([paths[i] for i in absolute])}. Use relative paths (or absolute paths in every row), or "
            f"pass allow_paths_outside_root=True if these files are meant to be read.",
        )
    if outside.size:
        _fail(
            source,
            f"{len(outside)} paths lead outside dataset_root={str(dataset_root)!r}: rows "
            f"{_preview([rows[i] for i in outside])}, paths {_preview([paths[i] for i in outside])}. Move the "
            f"files inside the root, or pass allow_paths_outside_root=True if these files are meant to be read.",
        )


def _check_queries_have_gallery(
    val: pd.DataFrame, is_query: pd.Series, is_gallery: pd.Series, source: str, allowed: bool
) -> None:
    labels = val[LABELS_COLUMN]
    gallery_counts = labels[is_gallery].value_counts()
    n_same_label_gallery = labels.map(gallery_counts).fillna(0).astype(int)
    # a row that is both query and gallery cannot answer itself
    n_available = n_same_label_gallery - (is_gallery & is_query).astype(int)
    lonely = val.index[is_query & (n_available <= 0)].tolist()
    if lonely:
        lonely_labels = sorted(set(labels.loc[lonely].tolist()))
        message = (
            f"{len(lonely)} validation queries have no gallery item with the same label (other than "
            f"themselves): labels {_preview(lonely_labels)}, rows {_preview(lonely)}."
        )
        if not allowed:
            _fail(source, message)
        warnings.warn(
            f"{source}: {message} They are distractors: the metrics score them as misses "
            f"(pass allow_queries_without_match=False to refuse such a table).",
            stacklevel=4,
        )


def _columns_and_rows(flags: pd.DataFrame) -> Optional[str]:
    """``"column 'x_2' in rows [1, 5]; column 'y_1' in rows [3]"`` for a boolean table of offending cells."""
    parts = [
        f"column {column!r} in rows {_preview(flags.index[flags[column]])}" for column in flags if flags[column].any()
    ]
    return "; ".join(parts) or None


def _check_bboxes(df: pd.DataFrame, source: str) -> None:
    present = [c for c in BBOXES_COLUMNS if c in df.columns]
    if not present:
        return
    if len(present) != len(BBOXES_COLUMNS):
        missing = [c for c in BBOXES_COLUMNS if c not in present]
        _fail(
            source,
            f"bounding boxes need all of the columns {BBOXES_COLUMNS}; only {present} are present "
            f"(missing: {missing}).",
        )
    boxes = df[BBOXES_COLUMNS].apply(pd.to_numeric, errors="coerce")
    non_numeric = _columns_and_rows(boxes.isna() & df[BBOXES_COLUMNS].notna())
    if non_numeric:
        _fail(source, f"bounding box coordinates must be numbers; {non_numeric} are not.")
    n_missing = boxes.isna().sum(axis=1)
    partial = _columns_and_rows(boxes.isna() & ((n_missing > 0) & (n_missing < 4)).to_numpy()[:, None])
    if partial:
        _fail(
            source,
            f"a bounding box is either all 4 of {BBOXES_COLUMNS} or none; these cells are empty in partial "
            f"boxes: {partial}.",
        )
    full = boxes[n_missing == 0]
    fractional = _columns_and_rows(full != full.round())
    if fractional:
        _fail(source, f"bounding box coordinates must be integers; {fractional} are not.")
    negative = _columns_and_rows(full < 0)
    if negative:
        _fail(source, f"bounding box coordinates must be >= 0; {negative} are negative.")
    for low, high, meaning in ((X1_COLUMN, X2_COLUMN, "left < right"), (Y1_COLUMN, Y2_COLUMN, "top < bottom")):
        bad = full.index[full[low] >= full[high]].tolist()
        if bad:
            _fail(
                source,
                f"bounding boxes need {low} < {high} ({meaning}; x_1 left, x_2 right, y_1 top, y_2 bottom); "
                f"rows {_preview(bad)} have {low} >= {high}.",
            )


__all__ = ["DataFrameFormatError", "check_retrieval_dataframe_format", "check_dataframe", "check_paths_inside_root"]
