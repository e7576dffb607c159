import json
from pathlib import Path

import pytest

from oml.utils.remote_storage import download_file_from_remote_storage, download_folder_from_remote_storage
from tests.utils.http_server import serve_files


def test_folder_and_file_download(tmp_path: Path) -> None:
    files = {
        "/ls/mock": json.dumps(["mock/a.txt", "mock/sub/b.txt"]).encode(),
        "/download/mock/a.txt": b"A",
        "/download/mock/sub/b.txt": b"B",
    }
    with serve_files(files) as server:
        storage = server.url("")
        download_folder_from_remote_storage("mock", tmp_path / "out", storage_url=storage)
        assert download_file_from_remote_storage("mock/a.txt", storage_url=storage) == b"A"
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"A"
    assert (tmp_path / "out" / "sub" / "b.txt").read_bytes() == b"B"


def test_listing_that_escapes_the_folder_is_refused(tmp_path: Path) -> None:
    files = {"/ls/mock": json.dumps(["mock/../../evil.txt"]).encode(), "/download/mock/../../evil.txt": b"x"}
    with serve_files(files) as server, pytest.raises(ValueError, match="outside"):
        download_folder_from_remote_storage("mock", tmp_path / "out", storage_url=server.url(""))
    assert not (tmp_path / "evil.txt").exists()
