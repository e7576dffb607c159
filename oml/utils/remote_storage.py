"""Files and folders on OML's team file server: ``/ls/<folder>`` lists them, ``/download/<path>`` serves them."""

import json
from pathlib import Path
from typing import Optional, Union

from tqdm.auto import tqdm

from oml.const import REQUESTS_TIMEOUT, STORAGE_URL
from oml.utils.io import download_file_from_url


def download_file_from_remote_storage(
    remote_path: str,
    fname: Optional[Union[str, Path]] = None,
    timeout: float = REQUESTS_TIMEOUT,
    storage_url: str = STORAGE_URL,
) -> Optional[bytes]:
    """Download ``remote_path`` from the server; write it (atomically) to ``fname`` or return its bytes."""
    return download_file_from_url(f"{storage_url}/download/{remote_path.lstrip('/')}", fname=fname, timeout=timeout)


def download_folder_from_remote_storage(
    remote_folder: str,
    local_folder: Union[str, Path],
    timeout: float = REQUESTS_TIMEOUT,
    storage_url: str = STORAGE_URL,
) -> None:
    """Download every file that ``/ls/<remote_folder>`` lists (a JSON list of paths) into ``local_folder``.

    The listed paths start with ``remote_folder``; they keep their structure below it.
    """
    listing = download_file_from_url(f"{storage_url}/ls/{remote_folder.strip('/')}", timeout=timeout)
    files = json.loads(listing)
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError(f"{storage_url}/ls/{remote_folder} did not return a JSON list of paths.")
    prefix = remote_folder.strip("/") + "/"
    for remote_path in tqdm(files, desc=f"Downloading {remote_folder}"):
        relative = remote_path.strip("/").removeprefix(prefix)
        if ".." in Path(relative).parts:
            raise ValueError(f"Refusing the listed path {remote_path!r}: it points outside of {local_folder}.")
        download_file_from_remote_storage(
            remote_path, fname=Path(local_folder) / relative, timeout=timeout, storage_url=storage_url
        )


__all__ = ["download_file_from_remote_storage", "download_folder_from_remote_storage"]
