"""The python blocks of docs/retrieval.md run, top to bottom in one namespace (so the documentation cannot rot)."""

import re
from pathlib import Path

import pytest

from oml.utils.download_mock_dataset import download_mock_dataset

DOC = Path(__file__).resolve().parents[2] / "docs" / "retrieval.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_doc_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(BLOCKS) >= 5
    download_mock_dataset(tmp_path / "mock_dataset")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    for i, block in enumerate(BLOCKS):
        exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)
    assert (tmp_path / "gallery.index").is_file() and (tmp_path / "search_results.png").is_file()
    assert (tmp_path / "search_results.html").read_text().count('class="row"') == 4
