"""Every ```python block of README.md runs, so the docs cannot rot.

Blocks run in one temporary working directory that already holds ``mock_dataset/`` (the blocks
themselves also call ``download_mock_dataset``, as a reader would).
"""

from pathlib import Path

import pytest

from oml.utils.download_mock_dataset import download_mock_dataset
from tests.utils.docs import REPO, python_blocks, run_block

README = REPO / "README.md"
BLOCKS = python_blocks(README)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("readme")
    download_mock_dataset(path / "mock_dataset")
    return path


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    run_block(README, index)
