"""Shared fixtures. The oml cache (checkpoints, mock dataset) goes to a temporary folder for the session."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("OML_CACHE_DIR", tempfile.mkdtemp(prefix="oml_test_cache_"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402

from oml.utils.download_mock_dataset import download_mock_dataset  # noqa: E402


@pytest.fixture(scope="session")
def mock_dataset_root() -> Path:
    """The generated mock dataset, once per test session (treat it as read-only)."""
    from oml.const import MOCK_DATASET_PATH

    download_mock_dataset(MOCK_DATASET_PATH)
    return MOCK_DATASET_PATH


@pytest.fixture(scope="session")
def mock_dataset_dfs(mock_dataset_root: Path):
    """``(df_train, df_val)`` of the mock dataset."""
    return download_mock_dataset(mock_dataset_root)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors run several times faster on one thread than on two busy cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def prepared_gallery_builds(monkeypatch: pytest.MonkeyPatch) -> list:
    """A list that gets an entry every time a ``PreparedGallery`` (the kNN's gallery operand) is built."""
    import oml.functional.knn as knn_module

    builds: list = []
    original = knn_module.PreparedGallery.__init__

    def counting_init(self, *args, **kwargs):
        builds.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(knn_module.PreparedGallery, "__init__", counting_init)
    return builds
