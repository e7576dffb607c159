"""Fixtures of the model tests."""

from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants


@pytest.fixture()
def offline_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and HF_HUB_OFFLINE=1 (set for huggingface_hub too, which reads the environment
    when it is imported): nothing can be downloaded, only what a test writes with ``write_to_hf_cache`` is found."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache
