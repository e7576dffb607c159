"""The python blocks of docs/retrieval.md run, top to bottom in one namespace (so the documentation cannot rot)."""

from pathlib import Path

import pytest

from oml.utils.download_mock_dataset import download_mock_dataset
from tests.utils.docs import DOCS, python_blocks, run_all_blocks

DOC = DOCS / "retrieval.md"


def test_doc_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(python_blocks(DOC)) >= 7
    download_mock_dataset(tmp_path / "mock_dataset")
    monkeypatch.chdir(tmp_path)
    run_all_blocks(DOC)
    assert (tmp_path / "gallery.index").is_file() and (tmp_path / "search_results.png").is_file()
    assert (tmp_path / "sharded_gallery" / "manifest.json").is_file() and (tmp_path / "vector_db").is_dir()
    assert (tmp_path / "search_results.html").read_text().count('class="row"') == 4
