"""Safe loading of checkpoint files and download of zoo weights.

* Local files are read with ``torch.load(..., weights_only=True)``: a pickle that would run code is refused.
* TorchScript archives (OpenAI's CLIP releases) run code when opened, so they are opened only after their
  full md5 matched a zoo entry.
* Zoo weights are downloaded with ``oml.utils.io.download_checkpoint`` into ``oml.const.CKPT_SAVE_ROOT``
  (looked up when called), checked with md5 and, where the publisher gives one, sha256.
"""

import hashlib
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, List, Mapping, Optional, Union

import torch
from torch import nn

import oml.const
from oml.models.utils import TStateDict, unwrap_state_dict
from oml.models.zoo import PretrainedEntry, as_entry
from oml.utils.io import (
    DownloadError,
    FileFormatError,
    calc_file_hash,
    check_torch_file,
    describe_torch_object,
    download_checkpoint,
)

TPath = Union[str, Path]
_EXPECTED = "a checkpoint written by torch.save (a state dict or a Lightning checkpoint)"


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds objects that could run code when loaded, so it was not opened."""


def _sha256(path: TPath) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_torchscript_archive(path: TPath) -> bool:
    """True if ``path`` is a TorchScript archive (a zip with compiled code, as ``torch.jit.save`` writes)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for name in names)


def load_checkpoint(path: TPath) -> Any:
    """``torch.load`` a local file on CPU with ``weights_only=True`` (tensors, containers and numbers only).

    Before unpickling, the file is checked by ``oml.utils.io.check_torch_file``: the CRC-32 checksums of the
    ``torch.save`` zip container are verified (``torch.load`` does not verify them: in OML a flipped bit loaded
    silently as a wrong weight), and empty, truncated or foreign files (a JPEG, an ONNX model, a text file, ...)
    get a message that names the file and says what it is.

    Raises:
        FileNotFoundError: if there is no such file.
        oml.utils.io.FileFormatError: if the file is empty, truncated, corrupted or not a ``torch.save`` file.
        UnsafeCheckpointError: if the file is a TorchScript archive or a pickle with other objects; the
            message says how to convert a trusted file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"There is no checkpoint file at {path}.")
    path = check_torch_file(path, expected=_EXPECTED)
    if is_torchscript_archive(path):
        raise UnsafeCheckpointError(
            f"{path} is a TorchScript archive, which runs code when opened. Only TorchScript archives whose md5 "
            f"matches a zoo entry (OpenAI's CLIP releases) are opened. If you trust the file, save its state dict "
            f"with torch.save(torch.jit.load(path).state_dict(), new_path) and pass new_path."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():  # a damaged pickle, not a refused object
            raise FileFormatError(
                f"{path} is damaged: torch.load cannot unpickle it ({e}); expected {_EXPECTED}."
            ) from e
        raise UnsafeCheckpointError(
            f"Refused to load {path}: it contains objects that are not plain tensors, containers or numbers, and "
            f"unpickling them could run code. If you trust the file, load it yourself with "
            f"torch.load(path, weights_only=False) and pass the state dict (or save it with torch.save and pass "
            f"the new path). Details: {e}"
        ) from e
    except (EOFError, RuntimeError, OSError) as e:  # legacy pickles carry no checksum: truncation shows up here
        reason = str(e) or "the file ends too early"
        raise FileFormatError(
            f"{path} is truncated or damaged: torch.load failed ({type(e).__name__}: {reason}); expected {_EXPECTED}."
        ) from e


def load_state_dict_file(path: TPath) -> TStateDict:
    """A state dict from a local file (``load_checkpoint``, then the ``"state_dict"`` entry if present).

    Raises:
        oml.utils.io.FileFormatError: besides the errors of ``load_checkpoint``, if the file holds no weights
            (no tensors, or another file of ours such as a saved ``SearchIndex``): the message says what it holds.
    """
    content = load_checkpoint(path)
    state_dict = unwrap_state_dict(content, source=f"checkpoint {path}")
    # nested dicts stay legal: some releases wrap the weights as {"model": state_dict} (the extractors unwrap them)
    has_tensors = any(
        isinstance(value, torch.Tensor)
        or (isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values()))
        for value in state_dict.values()
    )
    if not has_tensors or isinstance(state_dict.get("format"), str):
        raise FileFormatError(
            f"{path} holds {describe_torch_object(content)}, expected model weights (a state dict of tensors or a "
            f"Lightning checkpoint with one)."
        )
    return state_dict


class CheckpointMismatchError(RuntimeError):
    """A state dict does not fit a model (another architecture or another head): counts and a few examples."""


def _examples(keys: List[str], n: int = 3) -> str:
    shown = ", ".join(repr(key) for key in keys[:n])
    return f"{shown}, ..." if len(keys) > n else shown


def load_state_dict_strictly(module: nn.Module, state_dict: TStateDict, source: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a short message when they do not fit.

    torch lists every missing and unexpected key and every shape mismatch, which for a checkpoint of another
    architecture is kilobytes of text; this message gives the counts and a few examples of each.

    Args:
        module: the model to fill.
        state_dict: the weights.
        source: what the weights are, for the message (e.g. the path of the checkpoint).

    Raises:
        CheckpointMismatchError: if keys are missing or unexpected or shapes differ.
    """
    try:  # torch decides what fits (some modules accept older key names); only its message is replaced
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointMismatchError(_describe_mismatch(module, state_dict, source, e)) from e


def _describe_mismatch(module: nn.Module, state_dict: TStateDict, source: str, error: RuntimeError) -> str:
    own = module.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    reshaped = [
        f"{key!r}: {tuple(state_dict[key].shape)} in the checkpoint, {tuple(own[key].shape)} in the model"
        for key in own
        if key in state_dict and isinstance(state_dict[key], torch.Tensor) and state_dict[key].shape != own[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of the model's {len(own)} keys are missing ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} keys are unexpected ({_examples(unexpected)})")
    if reshaped:
        problems.append(f"{len(reshaped)} shapes differ ({'; '.join(reshaped[:3])})")
    if not problems:  # an error raised by a loading hook of the module
        problems.append(str(error)[:500])
    hint = " It looks like the weights of another architecture." if len(missing) + len(reshaped) > len(own) // 2 else ""
    return f"The weights from {source} do not fit {type(module).__name__}: {'; '.join(problems)}.{hint}"


def load_torchscript_state_dict(path: TPath, expected_md5: str, submodule: Optional[str] = None) -> TStateDict:
    """The state dict of a TorchScript archive (or of one of its submodules), opened only if its md5 matches.

    Args:
        path: the archive.
        expected_md5: the full md5 hex digest the archive must have (a short prefix would be forgeable).
        submodule: attribute to take from the loaded module (e.g. ``"visual"`` for OpenAI CLIP).

    Raises:
        UnsafeCheckpointError: if the md5 is shorter than 32 characters or does not match.
    """
    if len(expected_md5) != 32:
        raise UnsafeCheckpointError(f"A TorchScript archive is opened only against a full md5, got {expected_md5!r}.")
    actual = calc_file_hash(path)
    if actual != expected_md5:
        raise UnsafeCheckpointError(
            f"Refused to open the TorchScript archive {path}: its md5 is {actual}, expected {expected_md5}."
        )
    with warnings.catch_warnings():  # torch deprecates TorchScript, but it is the format of these releases
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    if submodule is not None:
        module = getattr(module, submodule)
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def download_pretrained(entry: Union[PretrainedEntry, Mapping[str, Any]], name: str) -> Path:
    """Download the file of a zoo entry into ``oml.const.CKPT_SAVE_ROOT`` (or reuse it) and check its hashes.

    The sources are tried in order; the file must match the entry's md5 prefix and, where the publisher
    gives one (Unicom, torchvision), its sha256 prefix. A dict in OML's form (``url``, ``hash``, ``fname``)
    is accepted too.

    Raises:
        oml.utils.io.DownloadError: if no source gave a file with the expected hashes; the message names the
            sources, the expected hash and the path where the file can be placed by hand.
    """
    entry = as_entry(entry, name)
    sources, save_root = list(entry.sources), Path(oml.const.CKPT_SAVE_ROOT)

    def fetch() -> Path:
        return Path(download_checkpoint(sources, hash_md5=entry.md5, fname=entry.fname, save_root=save_root))

    path = fetch()
    if entry.sha256 is None or _sha256(path).startswith(entry.sha256):
        return path
    path.unlink()  # a stale or wrong file: fetch it once more
    path = fetch()
    actual = _sha256(path)
    if not actual.startswith(entry.sha256):
        path.unlink()
        raise DownloadError(
            f"The file of the pretrained weights {name!r} downloaded from {sources} has sha256 {actual}, expected "
            f"one starting with {entry.sha256}. If you are offline or the sources moved, download the file by hand "
            f"and place it at {path}."
        )
    return path


def resolve_weights(weights: TPath, pretrained_models: Mapping[str, Any], owner: str) -> Path:
    """The local file for ``weights``: a zoo name (downloaded if needed) or the path of a file.

    Raises:
        FileNotFoundError: if ``weights`` is neither a zoo name nor an existing file (the message lists the zoo).
    """
    if isinstance(weights, str) and weights in pretrained_models:
        return download_pretrained(pretrained_models[weights], weights)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={str(weights)!r} is neither a file nor one of the pretrained weights of {owner}: "
            f"{sorted(pretrained_models)}."
        )
    return path


def read_weights(weights: TPath, pretrained_models: Mapping[str, Any], owner: str) -> TStateDict:
    """The state dict of ``weights``: a zoo name (downloaded if needed) or the path of a file.

    Files are read with ``load_state_dict_file`` (``weights_only=True``). A TorchScript archive, downloaded or
    given as a path, is opened only when its full md5 is the one of a TorchScript entry of
    ``pretrained_models`` (OpenAI's CLIP releases), and the state dict of that entry's
    ``torchscript_submodule`` is returned.

    Raises:
        FileNotFoundError: if ``weights`` is neither a zoo name nor an existing file (the message lists the zoo).
        UnsafeCheckpointError: for a TorchScript archive that is not a release of the zoo.
    """
    path = resolve_weights(weights, pretrained_models, owner)
    if not is_torchscript_archive(path):
        return load_state_dict_file(path)
    md5 = calc_file_hash(path)
    entries = [as_entry(entry, name) for name, entry in pretrained_models.items()]
    known = [entry for entry in entries if entry.torchscript_submodule is not None and entry.md5 == md5]
    if not known:
        raise UnsafeCheckpointError(
            f"{path} is a TorchScript archive (md5 {md5}) that is not one of the TorchScript releases in the zoo of "
            f"{owner}; TorchScript runs code when opened, so it was not. If you trust it, save the state dict of "
            f"the model inside with torch.save(torch.jit.load(path).state_dict(), new_path) and pass new_path."
        )
    return load_torchscript_state_dict(path, md5, submodule=known[0].torchscript_submodule)


__all__ = [
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "load_state_dict_strictly",
    "is_torchscript_archive",
    "load_checkpoint",
    "load_state_dict_file",
    "load_torchscript_state_dict",
    "download_pretrained",
    "resolve_weights",
    "read_weights",
]
