"""Every ```python block of README.md runs, so the docs cannot rot.

Blocks run in one temporary working directory that already holds ``mock_dataset/`` (the blocks
themselves also call ``download_mock_dataset``, as a reader would).
"""

import re
from pathlib import Path

import pytest

from oml.utils.download_mock_dataset import download_mock_dataset

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


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
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})
