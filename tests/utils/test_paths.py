"""``oml.utils.paths`` against slow references: one ``os.path`` question per path, asked in a plain loop."""

import os
import random
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import pytest

import oml.utils.paths as paths_module
from oml.utils.paths import missing_files, paths_outside_root

NFC, NFD = "\u00e9.jpg", "e\u0301.jpg"  # the same name in two unicode normal forms


def reference_outside(path: str, root: Path, allow_absolute: bool) -> bool:
    """Follow the path part by part as the kernel does: a ``..`` goes to the parent of the real folder."""
    if os.path.isabs(path):
        return not allow_absolute
    real_root = os.path.realpath(root)
    here = real_root
    for part in path.split("/"):
        if part == "..":
            here = os.path.dirname(os.path.realpath(here))
            if os.path.commonpath([here, real_root]) != real_root:
                return True
        elif part not in ("", "."):
            here = os.path.join(here, part)
    return False


def reference_missing(path: str, root: Optional[Path]) -> bool:
    return not os.path.isfile(os.path.join(root or "", path))


@pytest.fixture(params=["default", "always list", "tiny scans"])
def listing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How far folders are listed: as shipped, every folder with a path asked, every such folder one entry
    at a time and only while it hits (the stat fallback answers the rest)."""
    if request.param != "default":
        monkeypatch.setattr(paths_module, "_MIN_ASKED", 1)
    if request.param == "tiny scans":
        monkeypatch.setattr(paths_module, "_CHUNK", 1)
    return request.param


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """``tmp/root`` with files, a folder, unicode and case variants, links inside, outside and dangling."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for rel in ["a/x.jpg", "a/y.JPG", f"a/{NFC}", "a/sub/z.jpg", "b.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(b"x")
    (outside / "deep" / "inner.jpg").write_bytes(b"x")
    (root / "link_in").symlink_to(root / "a", target_is_directory=True)
    (root / "link_out").symlink_to(outside / "deep", target_is_directory=True)
    (root / "link_file").symlink_to(root / "a" / "x.jpg")
    (root / "link_secret").symlink_to(outside / "secret.jpg")
    (root / "dangling").symlink_to(root / "nowhere.jpg")
    return root


# path: (leaves the root, is not a file)
ADVERSARIAL = {
    "a/x.jpg": (False, False),
    "./a/x.jpg": (False, False),
    "a//x.jpg": (False, False),
    "a/./sub/../x.jpg": (False, False),
    "a/x.jpg/": (False, True),  # a trailing slash asks for a folder
    "a/x.jpg/.": (False, True),
    "a": (False, True),  # a folder is not a file
    "a/Y.JPG": (False, True),  # case-sensitive file system
    f"a/{NFC}": (False, False),
    f"a/{NFD}": (False, True),  # another name on Linux file systems
    "missing/x.jpg": (False, True),
    "missing/deeper/x.jpg": (False, True),
    "missing/../a/x.jpg": (False, True),  # the kernel needs missing/ to exist
    "b.jpg/x.jpg": (False, True),  # the parent is a file
    "link_in/x.jpg": (False, False),
    "link_in/../b.jpg": (False, False),  # link_in's parent is the root
    "link_file": (False, False),
    "link_out/inner.jpg": (False, False),  # a link the owner made: followed, not an escape
    "link_secret": (False, False),
    "link_out/../secret.jpg": (True, False),  # .. of the link is outside/, not the root
    "link_out/..": (True, True),
    "dangling": (False, True),
    "..": (True, True),
    "../outside/secret.jpg": (True, False),
    "../root/b.jpg": (True, False),  # back inside in the end, but read through the parent
    "a/../../root/b.jpg": (True, False),
    "a/sub/../../b.jpg": (False, False),
    "a/..": (False, True),
    "..b.jpg": (False, True),  # a name that starts with two dots
    "a/..x.jpg": (False, True),
}


def test_adversarial_paths(tree: Path, listing: str) -> None:
    paths = list(ADVERSARIAL)
    expected_outside = np.flatnonzero([outside for outside, _ in ADVERSARIAL.values()])
    expected_missing = np.flatnonzero([missing for _, missing in ADVERSARIAL.values()])
    np.testing.assert_array_equal(paths_outside_root(paths, tree), expected_outside)
    np.testing.assert_array_equal(missing_files(paths, tree), expected_missing)
    # the references agree, so the random cases below test against the same rules
    assert [reference_outside(p, tree, False) for p in paths] == [o for o, _ in ADVERSARIAL.values()]
    assert [reference_missing(p, tree) for p in paths] == [m for _, m in ADVERSARIAL.values()]


def test_absolute_paths(tree: Path) -> None:
    paths = [str(tree / "a" / "x.jpg"), "a/x.jpg", str(tree.parent / "outside" / "secret.jpg"), "/nonexistent/x.jpg"]
    np.testing.assert_array_equal(paths_outside_root(paths, tree), [0, 2, 3])
    np.testing.assert_array_equal(paths_outside_root(paths, tree, allow_absolute=True), [])
    np.testing.assert_array_equal(missing_files(paths, tree), [3])  # the root does not change absolute paths
    assert paths_outside_root([], tree).dtype == missing_files([], tree).dtype == np.int64


def test_root_given_through_links_and_dots(tree: Path) -> None:
    (tree.parent / "alias").symlink_to(tree, target_is_directory=True)
    for root in (tree.parent / "alias", tree / "a" / ".."):
        np.testing.assert_array_equal(paths_outside_root(["a/../b.jpg", "../root/b.jpg"], root), [1])
        np.testing.assert_array_equal(missing_files(["b.jpg", "a/sub/z.jpg", "nope.jpg"], root), [2])


def test_no_root_means_the_current_folder(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    np.testing.assert_array_equal(missing_files([Path("b.jpg"), "a/x.jpg", "a/nope.jpg", "x.jpg"]), [2, 3])


def _random_paths(root: Path, rng: random.Random, n: int) -> List[str]:
    parts = ["a", "sub", "x.jpg", "y.JPG", "Y.JPG", "z.jpg", "b.jpg", NFC, NFD, "root", "outside", "deep"]
    parts += ["inner.jpg", "secret.jpg", "link_in", "link_out", "link_file", "link_secret", "dangling"]
    parts += ["missing", "..", "..", ".", ""]
    paths = []
    for _ in range(n):
        path = "/".join(rng.choice(parts) for _ in range(rng.randint(1, 5)))
        kind = rng.random()
        if kind < 0.1:
            path = os.path.join(str(rng.choice([root, root.parent])), path)
        elif kind < 0.2:
            path = f"./{path}"
        elif kind < 0.3:
            path = f"{path}/"
        paths.append(path)
    return paths


def test_random_paths_against_the_references(tree: Path, listing: str) -> None:
    rng = random.Random(0)
    paths = _random_paths(tree, rng, 3000)
    for allow_absolute in (False, True):
        expected = np.flatnonzero([reference_outside(p, tree, allow_absolute) for p in paths])
        np.testing.assert_array_equal(paths_outside_root(paths, tree, allow_absolute), expected)
    expected = np.flatnonzero([reference_missing(p, tree) for p in paths])
    assert 0 < len(expected) < len(paths)  # both answers occur
    np.testing.assert_array_equal(missing_files(paths, tree), expected)


class _CountingScandir:
    """``os.scandir`` that counts the entries it hands out."""

    def __init__(self) -> None:
        self.entries = 0
        self.original = os.scandir

    def __call__(self, folder: str) -> "_CountingScandir._Listing":
        return self._Listing(self, self.original(folder))

    class _Listing:
        def __init__(self, owner: "_CountingScandir", listing) -> None:
            self.owner, self.listing = owner, listing

        def __enter__(self) -> Iterator[os.DirEntry]:
            self.listing.__enter__()
            return self._entries()

        def _entries(self) -> Iterator[os.DirEntry]:
            for entry in self.listing:
                self.owner.entries += 1
                yield entry

        def __exit__(self, *args) -> None:
            self.listing.__exit__(*args)


def test_listing_replaces_stats_and_stops_early_in_big_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"{i:04d}.jpg" for i in range(2000)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    stats: List[str] = []
    original_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: stats.append(path) or original_stat(path, *a, **k))
    scandir = _CountingScandir()
    monkeypatch.setattr(os, "scandir", scandir)

    # every file asked: one listing, a stat only for the path it does not show
    assert missing_files(names + ["nope.jpg"], tmp_path).tolist() == [2000]
    assert stats == [os.path.join(tmp_path, "nope.jpg")] and scandir.entries == 2000

    # a few files asked in a big folder: no listing, a stat each
    stats.clear()
    scandir.entries = 0
    assert missing_files(["1999.jpg", "nope.jpg"], tmp_path).tolist() == [1]
    assert scandir.entries == 0 and len(stats) == 2

    # enough to list, but sparse: the scan stops after a chunk that hits too rarely, the rest is stat'ed
    stats.clear()
    scandir.entries = 0
    asked = names[:: len(names) // paths_module._MIN_ASKED]
    assert missing_files(asked, tmp_path).tolist() == []
    assert scandir.entries == paths_module._CHUNK and len(stats) <= len(asked)
