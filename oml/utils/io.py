"""Atomic writes, hashes, and downloads of checkpoints: progress bar, md5 check, several sources."""

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

from tqdm.auto import tqdm

from oml.const import CKPT_SAVE_ROOT, REQUESTS_TIMEOUT

TPath = Union[str, Path]
_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_write(path: TPath, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step.

    Readers never see a half-written file: the content goes to a hidden temporary file in the same
    folder (so the final ``os.replace`` is a rename on one file system), is flushed to disk, and only
    then takes the final name. If the block raises, the temporary file is removed and ``path`` keeps
    its old content (or stays absent).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_write(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: TPath, content: bytes) -> None:
    """Write ``content`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(content)


class DownloadError(RuntimeError):
    """A file could not be obtained from any of its sources (the message says where to put it by hand)."""


def calc_file_hash(fname: TPath) -> str:
    """md5 hex digest of a file."""
    md5 = hashlib.md5()
    with open(fname, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
    return md5.hexdigest()


def calc_folder_hash(folder: TPath) -> str:
    """md5 of a folder: its sorted relative posix file names, then the md5 of every file in that order."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    md5 = hashlib.md5()
    for path in files:
        md5.update(path.relative_to(folder).as_posix().encode())
    for path in files:
        md5.update(calc_file_hash(path).encode())
    return md5.hexdigest()


def check_exists_and_validate_md5(path: TPath, md5: Optional[str] = None) -> bool:
    """True if ``path`` (a file or a folder) exists and, when ``md5`` is given, its hash starts with it."""
    path = Path(path)
    if not path.exists():
        return False
    if md5 is None:
        return True
    actual = calc_folder_hash(path) if path.is_dir() else calc_file_hash(path)
    return actual.startswith(md5)


def _as_url(url_or_fid: str) -> str:
    """A Google-Drive file id (what OML's zoo lists as a fallback source) becomes its download URL."""
    if "://" in url_or_fid:
        return url_or_fid
    return f"https://drive.google.com/uc?export=download&id={url_or_fid}"


def _download_to(url: str, destination: Path, timeout: float, hash_md5: Optional[str]) -> None:
    """Stream ``url`` into a temporary file next to ``destination``; rename only if complete and valid."""
    with atomic_write(destination, suffix=".part") as tmp_path:
        request = urllib.request.Request(url, headers={"User-Agent": "oml"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp_path, "wb") as out:
            total = response.headers.get("Content-Length")
            total_bytes = int(total) if total is not None else None
            received = 0
            with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=destination.name, leave=False) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total_bytes is not None and received != total_bytes:
            raise DownloadError(f"the transfer was cut: got {received} of {total_bytes} bytes")
        if hash_md5 is not None:
            actual = calc_file_hash(tmp_path)
            if not actual.startswith(hash_md5):
                raise DownloadError(f"md5 mismatch: expected a hash starting with {hash_md5!r}, got {actual!r}")


def download_file_from_url(
    url: str, fname: Optional[TPath] = None, timeout: float = REQUESTS_TIMEOUT
) -> Optional[bytes]:
    """Download ``url``; write it atomically to ``fname`` (and return None) or return its bytes."""
    if fname is not None:
        _download_to(url, Path(fname), timeout=timeout, hash_md5=None)
        return None
    with tempfile.TemporaryDirectory() as tmp_dir:
        path = Path(tmp_dir) / "download"
        _download_to(url, path, timeout=timeout, hash_md5=None)
        return path.read_bytes()


def download_checkpoint(
    url_or_fid: Union[str, Sequence[str]],
    hash_md5: Optional[str],
    fname: Optional[str] = None,
    save_root: Optional[TPath] = None,
    timeout: float = REQUESTS_TIMEOUT,
) -> str:
    """Return the local path of a checkpoint, downloading it into ``CKPT_SAVE_ROOT`` if needed.

    A file already present is reused when its md5 starts with ``hash_md5``; otherwise the sources are
    tried in order (a URL, or a Google-Drive file id as in OML's zoo). Each download streams into a
    temporary file with a progress bar, is checked against ``hash_md5`` and only then renamed to its
    final name, so a cut transfer or a wrong file never lands under the final name.

    Args:
        url_or_fid: one source or a list of sources, tried in order.
        hash_md5: expected md5 prefix (6-32 hex characters); None skips the check.
        fname: file name inside ``save_root`` (default: the last part of the first URL).
        save_root: folder for the file (default ``CKPT_SAVE_ROOT``).
        timeout: seconds to wait for a server.

    Raises:
        DownloadError: when no source worked; the message lists every source with its error, the
            expected md5 and the path where the file can be placed by hand.
    """
    sources: List[str] = [url_or_fid] if isinstance(url_or_fid, str) else list(url_or_fid)
    if not sources:
        raise ValueError("download_checkpoint needs at least one source (URL or file id).")
    save_root = Path(save_root) if save_root is not None else CKPT_SAVE_ROOT
    fname = fname or _as_url(sources[0]).rstrip("/").split("/")[-1].split("?")[0]
    destination = save_root / fname

    if destination.exists():
        if hash_md5 is None or calc_file_hash(destination).startswith(hash_md5):
            return str(destination)
        destination.unlink()

    errors = []
    for source in sources:
        url = _as_url(source)
        try:
            _download_to(url, destination, timeout=timeout, hash_md5=hash_md5)
            return str(destination)
        except (urllib.error.URLError, http.client.HTTPException, OSError, DownloadError, ValueError) as e:
            errors.append(f"  - {url}: {e}")
    raise DownloadError(
        f"Could not download {fname!r} from any of its sources:\n" + "\n".join(errors) + "\n"
        f"If you are offline, download the file by hand from one of these URLs and place it at "
        f"{destination} (its md5 must start with {hash_md5!r})."
    )


def download_checkpoint_one_of(
    url_or_fid_list: Sequence[str], hash_md5: Optional[str], fname: Optional[str] = None
) -> str:
    """OML 0.4.4 name of ``download_checkpoint`` with a list of sources."""
    return download_checkpoint(list(url_or_fid_list), hash_md5=hash_md5, fname=fname)


__all__ = [
    "DownloadError",
    "calc_file_hash",
    "calc_folder_hash",
    "check_exists_and_validate_md5",
    "download_file_from_url",
    "download_checkpoint",
    "download_checkpoint_one_of",
]
