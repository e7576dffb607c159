import hashlib
import os
from pathlib import Path

import pytest

from oml.utils.io import (
    DownloadError,
    calc_file_hash,
    calc_folder_hash,
    check_exists_and_validate_md5,
    download_checkpoint,
    download_checkpoint_one_of,
    download_file_from_url,
)
from tests.utils.http_server import serve_files, unused_local_url

PAYLOAD = os.urandom(3 * (1 << 20) + 123)  # a few chunks, so a cut transfer is really partial
MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_hashes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"bb")
    (tmp_path / "a.bin").write_bytes(b"a")
    assert calc_file_hash(tmp_path / "a.bin") == hashlib.md5(b"a").hexdigest()
    expected = hashlib.md5()
    for name in ("a.bin", "sub/b.bin"):
        expected.update(name.encode())
    for content in (b"a", b"bb"):
        expected.update(hashlib.md5(content).hexdigest().encode())
    assert calc_folder_hash(tmp_path) == expected.hexdigest()
    assert check_exists_and_validate_md5(tmp_path / "a.bin", hashlib.md5(b"a").hexdigest()[:6])
    assert not check_exists_and_validate_md5(tmp_path / "a.bin", "000000")
    assert not check_exists_and_validate_md5(tmp_path / "missing")


def test_good_download_and_reuse(tmp_path: Path) -> None:
    with serve_files({"/ckpt.pth": PAYLOAD}) as server:
        path = download_checkpoint(server.url("/ckpt.pth"), hash_md5=MD5[:6], save_root=tmp_path)
        assert Path(path) == tmp_path / "ckpt.pth" and Path(path).read_bytes() == PAYLOAD
        again = download_checkpoint(server.url("/ckpt.pth"), hash_md5=MD5[:6], save_root=tmp_path)
        assert again == path and server.requests == ["/ckpt.pth"]  # the valid file is reused
    assert list(tmp_path.iterdir()) == [tmp_path / "ckpt.pth"]


def test_stale_file_with_wrong_hash_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_bytes(b"old")
    with serve_files({"/w.pth": PAYLOAD}) as server:
        path = download_checkpoint(server.url("/w.pth"), hash_md5=MD5, save_root=tmp_path)
    assert Path(path).read_bytes() == PAYLOAD


def test_wrong_hash_leaves_no_file(tmp_path: Path) -> None:
    with serve_files({"/w.pth": PAYLOAD}) as server, pytest.raises(DownloadError, match="md5 mismatch") as error:
        download_checkpoint(server.url("/w.pth"), hash_md5="abcdef", save_root=tmp_path)
    assert str(tmp_path / "w.pth") in str(error.value) and "'abcdef'" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_cut_transfer_is_not_used(tmp_path: Path) -> None:
    with serve_files({"/w.pth": PAYLOAD}, cut_after={"/w.pth": 1 << 20}) as server, pytest.raises(DownloadError):
        download_checkpoint(server.url("/w.pth"), hash_md5=None, save_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_first_source_down_second_good(tmp_path: Path) -> None:
    with serve_files({"/good.pth": PAYLOAD}) as server:
        sources = [server.url("/missing.pth"), unused_local_url("/x.pth"), server.url("/good.pth")]
        path = download_checkpoint_one_of(sources, hash_md5=MD5[:8], fname="model.pth")
    assert Path(path).read_bytes() == PAYLOAD and Path(path).name == "model.pth"


def test_offline_message_names_url_and_path(tmp_path: Path) -> None:
    url = unused_local_url("/vits16.ckpt")
    with pytest.raises(DownloadError) as error:
        download_checkpoint(url, hash_md5="a76b85", save_root=tmp_path)
    message = str(error.value)
    assert url in message and str(tmp_path / "vits16.ckpt") in message and "by hand" in message
    assert "a76b85" in message


def test_download_file_from_url(tmp_path: Path) -> None:
    with serve_files({"/f": b"hello"}) as server:
        assert download_file_from_url(server.url("/f")) == b"hello"
        assert download_file_from_url(server.url("/f"), fname=tmp_path / "f.txt") is None
    assert (tmp_path / "f.txt").read_bytes() == b"hello"
