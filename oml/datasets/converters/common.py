"""What the four benchmark converters share: reading the raw files with errors that name the file and
line, checking paths and boxes, and turning the rows into the oml tables with a summary.

Every raw row carries where it came from (``SOURCE_FILE``, ``SOURCE_LINE`` columns) until the tables are
written, so any check can name the line of the published file at fault. The checks are vectorised: a file
is parsed in one pass, every image's existence is tested against one listing of each image folder.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from oml import const
from oml.utils.io import atomic_write
from oml.utils.paths import missing_files, paths_outside_root

TPath = Union[str, Path]

SOURCE_FILE = "_source_file"
SOURCE_LINE = "_source_line"

SHARED_CLASSES = "shared_classes"
UNSEEN_CLASSES = "unseen_classes"
PROTOCOLS: Dict[str, str] = {
    SHARED_CLASSES: (
        "OML 0.4.4's split, the one the zoo figures were measured on: the dataset's own train/test files, "
        "the same classes on both sides (not comparable with metric-learning papers)"
    ),
    UNSEEN_CLASSES: ("the protocol of metric-learning papers: the validation classes are never seen in training"),
}


class RawDataError(ValueError):
    """A file of a published dataset layout is missing or does not read as expected (the message names the
    file and the line)."""


def where(path: TPath, line: object) -> str:
    """``"<file>, line <n>"`` (or ``"<file>, <place>"`` for a non-text file): how errors point at a raw row."""
    return f"{path}, {line}" if isinstance(line, str) else f"{path}, line {line}"


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file; otherwise raise ``RawDataError`` saying what it should hold."""
    if not path.is_file():
        raise RawDataError(f"{path}: the file is missing (it should hold {what}). Is the dataset root right?")
    return path


def check_protocol(dataset: str, protocol: str, offered: Sequence[str]) -> None:
    """Refuse a protocol name that this dataset does not have, listing the ones it has."""
    if protocol not in offered:
        known = "; ".join(f"{name!r}: {PROTOCOLS[name]}" for name in offered)
        raise ValueError(f"{dataset} has no protocol {protocol!r}. Available: {known}.")


def read_text_table(
    path: Path,
    columns: Sequence[str],
    ints: Sequence[str] = (),
    floats: Sequence[str] = (),
    header: Optional[Sequence[str]] = None,
    count_line: bool = False,
) -> pd.DataFrame:
    """Read a file of whitespace-separated columns (runs of spaces count as one separator).

    Args:
        path: the file.
        columns: the names of its columns, in order.
        ints: columns that must hold integers.
        floats: columns that must hold finite numbers.
        header: the header line the file must have (as words), after the count line if any.
        count_line: the first line holds the number of data rows (DeepFashion files).

    Returns:
        the rows (strings, except ``ints`` and ``floats``) with ``SOURCE_FILE`` and ``SOURCE_LINE`` (1-based).
        Blank lines are skipped.

    Raises:
        RawDataError: naming the file and the first bad line: a wrong count, header, number of columns,
            or a value that is not a number.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    first = 0
    if count_line:
        declared = lines[0].strip() if lines else ""
        if not declared.isdigit():
            raise RawDataError(f"{where(path, 1)}: expected the number of rows, got {declared!r}.")
        first = 1
    if header is not None:
        got = lines[first].split() if len(lines) > first else []
        if got != list(header):
            raise RawDataError(
                f"{where(path, first + 1)}: expected the header {' '.join(header)!r}, got {' '.join(got)!r}."
            )
        first += 1
    fields = [line.split() for line in lines[first:]]
    numbers = np.arange(first + 1, len(lines) + 1)
    lengths = np.fromiter(map(len, fields), dtype=np.int64, count=len(fields))
    filled = lengths > 0
    bad = np.flatnonzero(filled & (lengths != len(columns)))
    if bad.size:
        i = bad[0]
        raise RawDataError(
            f"{where(path, numbers[i])}: expected {len(columns)} columns ({' '.join(columns)}), got {lengths[i]}: "
            f"{lines[numbers[i] - 1]!r} ({bad.size} malformed lines in the file)."
        )
    df = pd.DataFrame([f for f, keep in zip(fields, filled) if keep], columns=list(columns), dtype=object)
    df[SOURCE_FILE] = str(path)
    df[SOURCE_LINE] = numbers[filled]
    if count_line and int(declared) != len(df):
        raise RawDataError(f"{where(path, 1)}: the file declares {declared} rows but holds {len(df)}.")
    for column in ints:
        text = df[column].astype(str)
        fail_rows(df, ~text.str.fullmatch(r"[+-]?\d+"), f"column {column!r} must be an integer")
        df[column] = text.astype(np.int64)
    for column in floats:
        values = pd.to_numeric(df[column], errors="coerce")
        fail_rows(df, ~np.isfinite(values.to_numpy(dtype=float)), f"column {column!r} must be a number")
        df[column] = values.astype(float)
    return df


def fail_rows(df: pd.DataFrame, bad: Union[pd.Series, np.ndarray], problem: str, show: Optional[str] = None) -> None:
    """Raise ``RawDataError`` naming the file and line of the first row where ``bad`` holds, and how many do.

    Args:
        df: rows with ``SOURCE_FILE`` and ``SOURCE_LINE``.
        bad: a boolean mask over the rows.
        problem: what is wrong, e.g. ``"the image does not exist"``.
        show: a column whose value of the first bad row is quoted in the message.
    """
    positions = np.flatnonzero(np.asarray(bad, dtype=bool))
    if positions.size == 0:
        return
    row = df.iloc[positions[0]]
    value = ""
    if show is not None:
        shown = row[show].item() if isinstance(row[show], np.generic) else row[show]  # 4, not np.int64(4)
        value = f" ({show}={shown!r})"
    more = f" [{positions.size} rows in all]" if positions.size > 1 else ""
    raise RawDataError(f"{where(row[SOURCE_FILE], row[SOURCE_LINE])}: {problem}{value}{more}.")


def check_unique(df: pd.DataFrame, column: str) -> None:
    """Refuse a repeated id: the error names the line of its second occurrence."""
    fail_rows(df, df[column].duplicated(), f"{column} is repeated (it already appeared above)", show=column)


def join_by_id(left: pd.DataFrame, right: pd.DataFrame, key: str, right_line: Optional[str] = None) -> pd.DataFrame:
    """Inner-join two raw files on ``key`` after checking that both list exactly the same ids.

    An id of one file missing from the other raises ``RawDataError`` naming the file and line where it
    appears and the file where it is missing. The source columns of ``left`` are kept; ``right_line`` names
    a column that keeps the lines of ``right`` (see ``as_source``).
    """
    for this, other in ((left, right), (right, left)):
        check_unique(this, key)
        fail_rows(this, ~this[key].isin(other[key]), f"{key} is not listed in {other[SOURCE_FILE].iloc[0]}", show=key)
    right = right.rename(columns={SOURCE_LINE: right_line}) if right_line else right.drop(columns=[SOURCE_LINE])
    return left.merge(right.drop(columns=[SOURCE_FILE]), on=key, how="inner", validate="one_to_one")


def as_source(rows: pd.DataFrame, path: Path, line_column: str) -> pd.DataFrame:
    """The rows with errors pointing at ``path``, at the lines kept in ``line_column`` by ``join_by_id``."""
    return rows.assign(**{SOURCE_FILE: str(path), SOURCE_LINE: rows[line_column]})


def check_paths(df: pd.DataFrame, dataset_root: Path) -> None:
    """Check that every ``path`` is relative, stays inside ``dataset_root`` and names a file there.

    Both are asked of ``oml.utils.paths`` for all rows at once (each image folder is listed once, not one
    ``stat`` per row in Python, which matters for SOP's 120k images); the errors name the raw file and line.
    """
    paths = df[const.PATHS_COLUMN].astype(str).tolist()
    for find, problem in (
        (paths_outside_root, "the image path must be relative and stay inside the dataset root"),
        (missing_files, f"the image does not exist under {dataset_root}"),
    ):
        bad = np.zeros(len(paths), dtype=bool)
        bad[find(paths, dataset_root)] = True
        fail_rows(df, bad, problem, show=const.PATHS_COLUMN)


def read_image_sizes(df: pd.DataFrame, dataset_root: Path, verbose: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Width and height of every row's image, from the file headers (the pixels are not decoded)."""
    widths = np.empty(len(df), dtype=np.int64)
    heights = np.empty(len(df), dtype=np.int64)
    paths = df[const.PATHS_COLUMN].tolist()
    for i, path in enumerate(tqdm(paths, desc="Reading image sizes", unit=" images", disable=not verbose)):
        try:
            with Image.open(dataset_root / path) as image:
                widths[i], heights[i] = image.size
        except OSError as e:
            row = df.iloc[i]
            raise RawDataError(
                f"{where(row[SOURCE_FILE], row[SOURCE_LINE])}: cannot read the image {path}: {e}."
            ) from e
    return widths, heights


def fit_boxes(df: pd.DataFrame, widths: np.ndarray, heights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The right and bottom edges (exclusive) of the boxes, after refusing the boxes that leave their image.

    A right or bottom edge one pixel past the image is clipped to it, not refused: the datasets mix
    inclusive and exclusive, 0- and 1-based corners, so one pixel is the convention's uncertainty. Anything
    further out, a negative corner or an empty box raises ``RawDataError`` naming the file and line.
    """
    x1, x2, y1, y2 = (df[c].to_numpy() for c in (const.X1_COLUMN, const.X2_COLUMN, const.Y1_COLUMN, const.Y2_COLUMN))
    fail_rows(df, (x1 >= x2) | (y1 >= y2), "the box is empty (it needs a positive width and height)")
    outside = (x1 < 0) | (y1 < 0) | (x1 >= widths) | (y1 >= heights) | (x2 > widths + 1) | (y2 > heights + 1)
    positions = np.flatnonzero(outside)
    if positions.size:
        i = positions[0]
        fail_rows(
            df,
            outside,
            f"the box (x_1={x1[i]}, y_1={y1[i]}, x_2={x2[i]}, y_2={y2[i]}) is outside the {widths[i]}x{heights[i]} "
            f"image {df[const.PATHS_COLUMN].iloc[i]}",
        )
    return np.minimum(x2, widths), np.minimum(y2, heights)


@dataclass
class ConversionSummary:
    """What a converter wrote: tables, rows and labels per split, queries, galleries, categories, drops."""

    dataset: str
    protocol: str
    dataset_root: Path
    tables: List[Path]
    rows: Dict[str, int]
    labels: Dict[str, int]
    n_queries: int
    n_galleries: int
    n_categories: Optional[int]
    dropped: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"{self.dataset} converted with the protocol {self.protocol!r}: {PROTOCOLS[self.protocol]}.",
            *(f"  wrote {path}" for path in self.tables),
            *(f"  {split}: {self.rows[split]} images of {self.labels[split]} labels" for split in self.rows),
            f"  queries: {self.n_queries}, gallery images: {self.n_galleries} (validation)",
            f"  categories: {self.n_categories if self.n_categories is not None else 'none'}",
            *(f"  {reason}: {n}" for reason, n in self.dropped.items()),
            *(f"  note: {note}" for note in self.notes),
        ]
        return "\n".join(lines)


def table_names(protocol: str, default: str) -> Tuple[str, str]:
    """``(df.csv, df_with_bboxes.csv)`` for the dataset's default protocol; the other one's tables carry its name,
    so that converting with both never overwrites the tables the recipes read."""
    suffix = "" if protocol == default else f"_{protocol}"
    return f"df{suffix}.csv", f"df_with_bboxes{suffix}.csv"


def finish(
    rows: pd.DataFrame,
    dataset: str,
    protocol: str,
    dataset_root: Path,
    names: Tuple[str, str],
    write_boxes: bool = True,
    notes: Sequence[str] = (),
) -> ConversionSummary:
    """Make the oml tables from the converted rows, write them atomically and return the summary.

    ``rows`` holds ``label``, ``path``, ``split``, ``is_query``, ``is_gallery`` (booleans on validation rows),
    optionally ``category`` and the box columns. Train labels with a single image are dropped (a pair
    sampler cannot use them; OML did the same); a validation query whose label has no other gallery image
    cannot be scored, so it stays in the gallery only (or is dropped when it is not a gallery image either).
    """
    dropped: Dict[str, int] = {}
    train = rows[const.SPLIT_COLUMN] == "train"
    single = train & (rows[const.LABELS_COLUMN].map(rows.loc[train, const.LABELS_COLUMN].value_counts()) == 1)
    if single.any():
        dropped["dropped train images whose label has no other image"] = int(single.sum())
    rows = rows[~single].copy()

    val = rows[const.SPLIT_COLUMN] == "validation"
    is_query = rows[const.IS_QUERY_COLUMN].where(val, False).astype(bool)
    is_gallery = rows[const.IS_GALLERY_COLUMN].where(val, False).astype(bool)
    n_gallery = is_gallery.groupby(rows[const.LABELS_COLUMN]).transform("sum") - (is_query & is_gallery)
    lonely = is_query & (n_gallery == 0)
    if (lonely & is_gallery).any():
        dropped["validation images kept as gallery only (no other image of their label)"] = int(
            (lonely & is_gallery).sum()
        )
    if (lonely & ~is_gallery).any():
        dropped["dropped queries without a gallery image of their label"] = int((lonely & ~is_gallery).sum())
    keep = ~(lonely & ~is_gallery)
    is_query &= ~lonely
    rows[const.IS_QUERY_COLUMN] = is_query.where(val, None)
    rows[const.IS_GALLERY_COLUMN] = is_gallery.where(val, None)
    rows, is_query, is_gallery = rows[keep], is_query[keep], is_gallery[keep]

    columns = [*const.OBLIGATORY_COLUMNS, *([const.CATEGORIES_COLUMN] if const.CATEGORIES_COLUMN in rows else [])]
    has_boxes = write_boxes and all(c in rows for c in const.BBOXES_COLUMNS)
    tables = [(dataset_root / names[0], columns)]
    if has_boxes:
        tables.append((dataset_root / names[1], [*columns, *const.BBOXES_COLUMNS]))
    for path, table_columns in tables:
        write_csv(rows[table_columns], path)

    splits = rows[const.SPLIT_COLUMN]
    return ConversionSummary(
        dataset=dataset,
        protocol=protocol,
        dataset_root=dataset_root,
        tables=[path for path, _ in tables],
        rows={split: int((splits == split).sum()) for split in ("train", "validation")},
        labels={
            split: int(rows.loc[splits == split, const.LABELS_COLUMN].nunique()) for split in ("train", "validation")
        },
        n_queries=int(is_query.sum()),
        n_galleries=int(is_gallery.sum()),
        n_categories=int(rows[const.CATEGORIES_COLUMN].nunique()) if const.CATEGORIES_COLUMN in rows else None,
        dropped=dropped,
        notes=list(notes),
    )


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a table atomically: readers never see a half-written CSV."""
    with atomic_write(path) as tmp:
        df.to_csv(tmp, index=False)


def one_vs_rest(rows: pd.DataFrame, is_validation: Union[pd.Series, np.ndarray]) -> pd.DataFrame:
    """Set ``split`` by ``is_validation``; every validation image is both a query and a gallery image."""
    is_validation = np.asarray(is_validation, dtype=bool)
    rows = rows.copy()
    rows[const.SPLIT_COLUMN] = np.where(is_validation, "validation", "train")
    rows[const.IS_QUERY_COLUMN] = is_validation
    rows[const.IS_GALLERY_COLUMN] = is_validation
    return rows


def pick(rows: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """The raw columns renamed to table columns, with the source columns kept for errors."""
    return rows[[*columns, SOURCE_FILE, SOURCE_LINE]].rename(columns=dict(columns))


__all__ = [
    "PROTOCOLS",
    "SHARED_CLASSES",
    "UNSEEN_CLASSES",
    "RawDataError",
    "ConversionSummary",
    "read_text_table",
    "fail_rows",
    "check_unique",
    "join_by_id",
    "as_source",
    "check_paths",
    "read_image_sizes",
    "fit_boxes",
    "finish",
    "table_names",
    "write_csv",
    "one_vs_rest",
    "require_file",
    "check_protocol",
    "where",
    "pick",
]
