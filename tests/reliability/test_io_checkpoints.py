"""Files we write and read back: checkpoints and search indexes are verified on load, wrong files are named.

Issue #17, findings 4 (a flipped bit loaded silently) and 10 (unhelpful errors on wrong files). Each case
asserts the exact failure: the error type, the file name and what the file is.
"""

import zipfile
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from oml.models import ResnetExtractor, TimmExtractor
from oml.models.checkpoint import CheckpointMismatchError, load_checkpoint, load_state_dict_file
from oml.retrieval.index import SearchIndex
from oml.utils.io import FileFormatError, check_torch_file

EXPECTED_WEIGHTS = "a checkpoint written by torch.save"


def _flip_bit_in_middle(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x10
    path.write_bytes(bytes(content))


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.ckpt"
    torch.save({"w": torch.arange(4096, dtype=torch.float32), "b": torch.zeros(3)}, path)
    return path


def test_intact_checkpoint_loads(weights_file: Path) -> None:
    assert torch.equal(load_checkpoint(weights_file)["w"], torch.arange(4096, dtype=torch.float32))


def test_flipped_bit_in_checkpoint_is_refused(weights_file: Path) -> None:
    _flip_bit_in_middle(weights_file)  # lands in the 16 KB tensor: torch.load itself would return a changed weight
    assert not torch.equal(torch.load(weights_file, weights_only=True)["w"], torch.arange(4096, dtype=torch.float32))
    with pytest.raises(FileFormatError, match=r"weights\.ckpt is corrupted: .*CRC-32"):
        load_checkpoint(weights_file)


def test_flipped_bit_in_search_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gallery.index"
    SearchIndex(torch.randn(500, 8), ids=[f"img{i}.jpg" for i in range(500)]).save(path)
    assert len(SearchIndex.load(path)) == 500
    _flip_bit_in_middle(path)
    with pytest.raises(FileFormatError, match=r"gallery\.index is corrupted: .*CRC-32"):
        SearchIndex.load(path)


@pytest.mark.parametrize("loader", [load_checkpoint, SearchIndex.load], ids=["checkpoint", "index"])
def test_truncated_file(weights_file: Path, tmp_path: Path, loader) -> None:
    if loader is SearchIndex.load:
        SearchIndex(torch.randn(50, 8)).save(weights_file)
    content = weights_file.read_bytes()
    (tmp_path / "cut.pt").write_bytes(content[: len(content) // 2])
    with pytest.raises(
        FileFormatError, match=r"cut\.pt is truncated or damaged .*Was the copy or the write interrupted"
    ):
        loader(tmp_path / "cut.pt")


def test_truncated_legacy_checkpoint(weights_file: Path, tmp_path: Path) -> None:
    """torch's pre-1.6 pickle format has no checksum: truncation is still reported with the path."""
    torch.save(torch.load(weights_file), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    content = (tmp_path / "old.pth").read_bytes()
    assert torch.equal(load_checkpoint(tmp_path / "old.pth")["b"], torch.zeros(3))
    for cut in (100, len(content) // 2):
        (tmp_path / "old_cut.pth").write_bytes(content[:cut])
        with pytest.raises(FileFormatError, match=r"old_cut\.pth is truncated or damaged"):
            load_checkpoint(tmp_path / "old_cut.pth")


def _jpeg(path: Path) -> None:
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def _onnx(path: Path) -> None:
    # the first bytes of what torch.onnx.export writes: ir_version, then the producer name "pytorch"
    path.write_bytes(b"\x08\x09\x12\x07pytorch\x1a\x062.15.0:\x8c\x01\n" + bytes(200))


WRONG_FILES = {
    "photo.jpg": (_jpeg, "is a JPEG image, not " + EXPECTED_WEIGHTS),
    "model.onnx": (_onnx, "is an ONNX model, not " + EXPECTED_WEIGHTS),
    "notes.txt": (lambda p: p.write_text("epoch 3: loss 0.25\n"), "is a text file .*'epoch 3: loss 0.25"),
    "empty.ckpt": (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\); expected " + EXPECTED_WEIGHTS),
    "model.safetensors": (
        lambda p: p.write_bytes(len(b'{"a":{}}').to_bytes(8, "little") + b'{"a":{}}'),
        "is a safetensors file",
    ),
}


@pytest.mark.parametrize("name", sorted(WRONG_FILES))
def test_wrong_kind_of_file_as_weights(tmp_path: Path, name: str) -> None:
    """OML called a JPEG or an ONNX file "an unsafe pickle", a text file gave KeyError: 101, an empty one EOFError."""
    write, message = WRONG_FILES[name]
    write(tmp_path / name)
    with pytest.raises(FileFormatError, match=rf"{name.replace('.', '[.]')} {message}"):
        ResnetExtractor(tmp_path / name, "resnet18", gem_p=None, remove_fc=True, normalise_features=False)
    with pytest.raises(FileFormatError, match=rf"{name.replace('.', '[.]')} .*search index saved by SearchIndex"):
        SearchIndex.load(tmp_path / name)


def test_state_dict_where_an_index_is_expected_and_back(weights_file: Path, tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match=r"weights\.ckpt holds a state dict of 2 tensors .*not a search index"):
        SearchIndex.load(weights_file)
    SearchIndex(torch.randn(5, 8)).save(tmp_path / "index.pt")
    with pytest.raises(FileFormatError, match=r"index\.pt holds a file of format 'oml-search-index-v1'.*model weights"):
        load_state_dict_file(tmp_path / "index.pt")
    torch.save({"epoch": 3, "global_step": 10}, tmp_path / "no_weights.ckpt")
    with pytest.raises(FileFormatError, match=r"no_weights\.ckpt holds a dict .*'epoch'.*expected model weights"):
        load_state_dict_file(tmp_path / "no_weights.ckpt")


def test_other_architecture_gets_a_short_message(tmp_path: Path) -> None:
    """torch lists every key (kilobytes for a ResNet); the message gives counts and a few examples."""
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "resnet10t.pth")
    with pytest.raises(CheckpointMismatchError) as error:
        TimmExtractor(tmp_path / "resnet10t.pth", "resnet18")
    message = str(error.value)
    assert len(message) < 800, message
    assert "resnet10t.pth" in message and "ResNet" in message
    assert "keys are missing" in message and "keys are unexpected" in message and "shapes differ" in message
    assert message.count("'") <= 2 * 9 + 2 * 3  # at most three examples of each kind
    # the same weights in the same architecture load
    TimmExtractor(tmp_path / "resnet10t.pth", "resnet10t")


def test_check_torch_file_skips_parts_written_without_crc(weights_file: Path) -> None:
    """A zero CRC means "not computed" (torch's compute_crc32=False option): such a file is not called corrupted."""
    from torch.utils.serialization import config

    old = config.save.compute_crc32
    config.save.compute_crc32 = False
    try:
        torch.save({"w": torch.ones(10)}, weights_file)
    finally:
        config.save.compute_crc32 = old
    with zipfile.ZipFile(weights_file) as archive:
        assert all(member.CRC == 0 for member in archive.infolist())  # zipfile's own testzip would reject it
    assert check_torch_file(weights_file, "x") == weights_file
    assert torch.equal(load_checkpoint(weights_file)["w"], torch.ones(10))
