"""Atomic writes, integrity checks of the files we read, hashes, and downloads (progress bar, md5, several sources)."""

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Union

import torch
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


class FileFormatError(ValueError):
    """A file is empty, truncated, corrupted or of another kind than expected (the message names the file)."""


# (first bytes, what the file is): files that users pass by mistake where a torch.save file is expected
_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. a Keras model)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable (ELF)"),
)
_HEAD = 64


def describe_file_start(head: bytes) -> Optional[str]:
    r"""What a file is, judged by its first bytes (``"a JPEG image"``, ``"an ONNX model"``, ...), or None.

    Files in PyTorch's own formats (a zip archive, a pickle) give None.

    >>> describe_file_start(b"\xff\xd8\xff\xe0")
    'a JPEG image'
    >>> describe_file_start(b"epoch,loss\n0,1.5\n")
    "a text file (it starts with 'epoch,loss\\n0,1.5\\n')"
    >>> describe_file_start(b"PK\x03\x04") is None
    True
    """
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if len(head) >= 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < 1 << 30:
        return "a safetensors file (load it with safetensors.torch.load_file and pass the state dict)"
    # an ONNX ModelProto starts with field 1 (ir_version, a small varint) and then field 2 (producer_name)
    if len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in (0x12, 0x3A):
        return "an ONNX model"
    if head[:1] == b"\x80" or head[:2] == b"PK":  # pickle protocol 2+ (torch's legacy format), zip (torch's format)
        return None
    text = head.decode("utf-8", errors="ignore")
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"a text file (it starts with {text[:40]!r})"
    return None


def check_torch_file(path: TPath, expected: str) -> Path:
    """Check a file before ``torch.load``: it exists, is not empty, is of the right kind and is intact.

    Files written by ``torch.save`` are zip archives whose parts carry CRC-32 checksums: every part is read
    and checked, so a flipped bit, a truncated copy or a half-written file is refused before unpickling
    (``torch.load`` itself does not check them). Files in torch's legacy pickle format carry no checksum and
    are only checked for being non-empty. Parts stored with a zero CRC (``torch.serialization.config.save.
    compute_crc32 = False``) are not checked.

    Args:
        path: the file.
        expected: what the file should be, for the messages (e.g. ``"a checkpoint written by torch.save"``).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        FileNotFoundError: if there is no such file.
        FileFormatError: if the file is empty, of another kind (a JPEG, an ONNX model, a text file, ...),
            truncated or corrupted; the message names the file, says what it is and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"There is no file at {path} (expected {expected}).")
    size = path.stat().st_size
    if size == 0:
        raise FileFormatError(f"{path} is empty (0 bytes); expected {expected}.")
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    kind = describe_file_start(head)
    if kind is not None:
        raise FileFormatError(f"{path} is {kind}, not {expected}.")
    if not head.startswith(b"PK"):
        return path  # torch's legacy (pickle) format: no checksum to verify
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if not any(m.filename.endswith("data.pkl") for m in members):
                names = [m.filename for m in members[:5]]
                raise FileFormatError(f"{path} is a zip archive (with {names}...), not {expected}.")
            for member in members:
                _check_crc(archive, member, path)
    except zipfile.BadZipFile as e:
        raise FileFormatError(
            f"{path} is truncated or damaged ({size} bytes; the zip container of torch.save cannot be read: {e}); "
            f"expected {expected}. Was the copy or the write interrupted?"
        ) from e
    return path


def _check_crc(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path) -> None:
    if member.CRC == 0 and member.file_size > 0:
        return  # written without checksums
    try:
        with archive.open(member) as data:  # zipfile checks the CRC-32 when the part has been read to its end
            while data.read(_CHUNK):
                pass
    except zipfile.BadZipFile as e:
        raise FileFormatError(
            f"{path} is corrupted: its part {member.filename!r} does not match its CRC-32 checksum ({e}). The file "
            f"changed after it was written (a damaged disk or copy); restore it from a backup or write it again."
        ) from e


def describe_torch_object(obj: Any) -> str:
    """A short description of what ``torch.load`` returned, for error messages (no long key lists).

    >>> describe_torch_object({"a": torch.zeros(1), "b": torch.zeros(2)})
    "a state dict of 2 tensors (keys 'a', 'b')"
    >>> describe_torch_object({"epoch": 3, "state_dict": {}, "pytorch-lightning_version": "2.6"})
    "a Lightning checkpoint (keys 'epoch', 'state_dict', 'pytorch-lightning_version')"
    """
    if isinstance(obj, dict):
        keys = list(obj)
        shown = ", ".join(repr(k) for k in keys[:5]) + (f", ... ({len(keys)} keys)" if len(keys) > 5 else "")
        if "pytorch-lightning_version" in obj or ("state_dict" in obj and "epoch" in obj):
            return f"a Lightning checkpoint (keys {shown})"
        if isinstance(obj.get("format"), str):
            return f"a file of format {obj['format']!r} (keys {shown})"
        if keys and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return f"a state dict of {len(keys)} tensors (keys {shown})"
        return f"a dict (keys {shown})" if keys else "an empty dict"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


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
    "atomic_write",
    "write_bytes_atomic",
    "FileFormatError",
    "describe_file_start",
    "check_torch_file",
    "describe_torch_object",
    "DownloadError",
    "calc_file_hash",
    "calc_folder_hash",
    "check_exists_and_validate_md5",
    "download_file_from_url",
    "download_checkpoint",
    "download_checkpoint_one_of",
]
