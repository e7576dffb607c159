"""The zoo: complete entries, downloads from a local server, hash checks, offline errors, refused pickles."""

import hashlib
import inspect
import re
import warnings
from dataclasses import FrozenInstanceError, replace
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

import oml.const
from oml.models import ExtractorWithMLP, ResnetExtractor, TimmExtractor, ViTCLIPExtractor, ViTExtractor
from oml.models.checkpoint import UnsafeCheckpointError, load_checkpoint, load_torchscript_state_dict
from oml.models.zoo import PretrainedEntry, as_entry
from oml.registry.models import EXTRACTORS_REGISTRY, PAIRWISE_MODELS_REGISTRY
from oml.registry.transforms import TRANSFORMS_REGISTRY, get_transforms_for_pretrained
from oml.utils.io import DownloadError
from tests.models.layout_utils import random_state_dict, read_layout
from tests.utils.http_server import serve_files, unused_local_url

ALL_ENTRIES = [
    (cls, name, entry) for cls in EXTRACTORS_REGISTRY.values() for name, entry in cls.pretrained_models.items()
]
HEX = re.compile(r"^[0-9a-f]+$")


@pytest.fixture()
def ckpt_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CKPT_SAVE_ROOT for the test (the zoo reads ``oml.const.CKPT_SAVE_ROOT`` when it downloads)."""
    root = tmp_path / "checkpoints"
    monkeypatch.setattr(oml.const, "CKPT_SAVE_ROOT", root)
    return root


def _serve_as(monkeypatch: pytest.MonkeyPatch, cls: Any, name: str, **changes: Any) -> Dict[str, Any]:
    entry = {**cls.pretrained_models[name], **changes}
    monkeypatch.setitem(cls.pretrained_models, name, entry)
    return entry


@pytest.fixture(scope="module")
def dino_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("zoo") / "dino.pth"
    torch.save(random_state_dict(read_layout("vit_vits16"), seed=11, strip="model."), path)
    return path.read_bytes()


def test_zoo_has_the_expected_names() -> None:
    names = {name for _, name, _ in ALL_ENTRIES}
    expected = {
        *(f"{a}_dino" for a in ("vits16", "vits8", "vitb16", "vitb8")),
        *(f"vits16_{d}" for d in ("inshop", "sop", "cub", "cars")),
        *(f"openai_{a}" for a in ("vitb16_224", "vitb32_224", "vitl14_224", "vitl14_336")),
        *(f"sber_{a}" for a in ("vitb16_224", "vitb32_224", "vitl14_224")),
        "vitb32_unicom", "vitb16_unicom", "vitl14_unicom", "vitl14_336px_unicom",
        "resnet50_moco_v2", *(f"resnet{d}_imagenet1k_v1" for d in (18, 34, 50, 101, 152)),
        "vits16_224_mlp_384_inshop",
        *(f"vit{s}14{r}_dinov2" for s in "sbl" for r in ("", "_reg")),
    }  # fmt: skip
    assert expected <= names
    assert len(names) == len(ALL_ENTRIES)  # names are unique across classes (transforms are looked up by name)
    assert all(
        cls.pretrained_models == {} for cls in PAIRWISE_MODELS_REGISTRY.values() if hasattr(cls, "pretrained_models")
    )


@pytest.mark.parametrize("cls, name, entry", ALL_ENTRIES, ids=[name for _, name, _ in ALL_ENTRIES])
def test_entry_is_complete(cls: Any, name: str, entry: Dict[str, Any]) -> None:
    assert entry["url"] and all(url.startswith("https://") or re.fullmatch(r"[\w-]{25,}", url) for url in entry["url"])
    assert entry["fname"] and "/" not in entry["fname"]
    md5, sha256 = entry.get("hash"), entry.get("sha256")
    if cls is TimmExtractor:  # MIIL's model card publishes no checksum
        assert md5 is None and sha256 is None
    else:
        assert md5 is not None or sha256 is not None
    assert md5 is None or (HEX.match(md5) and 6 <= len(md5) <= 32)
    assert sha256 is None or (HEX.match(sha256) and len(sha256) >= 8)
    assert entry["transforms"]["name"] in TRANSFORMS_REGISTRY and isinstance(entry["transforms"]["args"], dict)
    init_args = dict(entry["init_args"])
    if "extractor_creator" in init_args:  # ExtractorWithMLP: from_pretrained turns the creator into the extractor
        init_args["extractor"] = init_args.pop("extractor_creator")
    inspect.signature(cls.__init__).bind(None, weights=name, **init_args)
    assert isinstance(entry, PretrainedEntry) and entry.licence  # every entry says where it comes from


def test_entries_are_frozen_typed_and_read_as_oml_dicts() -> None:
    entry = ViTExtractor.pretrained_models["vits16_sop"]
    with pytest.raises(FrozenInstanceError):
        entry.md5 = "000000"  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.init_args["arch"] = "vitb16"  # type: ignore[index]
    as_dict = dict(entry)  # OML 0.4.4's view
    assert as_dict["url"] == list(entry.sources) and as_dict["hash"] == "21e743" == entry.md5
    assert as_dict["init_args"] == {"arch": "vits16", "normalise_features": True} and entry.metrics == {"cmc@1": 0.866}
    assert as_entry(as_dict) == entry  # a dict in OML's form converts back (the loader accepts both)
    as_dict["init_args"]["arch"], as_dict["transforms"]["args"]["im_size"] = "vitb8", 1
    assert entry.init_args["arch"] == "vits16" and entry.transforms.args["im_size"] == 224
    with pytest.raises(ValueError, match="md5"):
        replace(entry, md5="not-hex")
    with pytest.raises(ValueError, match="unknown keys"):
        as_entry({**entry, "sha1": "00"}, "vits16_sop")
    with pytest.raises(ValueError, match="full md5"):
        replace(ViTCLIPExtractor.pretrained_models["openai_vitb16_224"], md5="44c3d804")


TRANSFORMS_SAMPLE = ["vits16_dino", "vits16_sop", "vits16_cars", "openai_vitl14_336", "vitl14_336px_unicom",
                     "resnet50_moco_v2", "vits16_224_mlp_384_inshop", "resnet50_miil_21k",
                     "vitl14_reg_dinov2"]  # fmt: skip


@pytest.mark.parametrize("name", TRANSFORMS_SAMPLE)
def test_transforms_for_pretrained(name: str) -> None:
    transforms, im_reader = get_transforms_for_pretrained(name)
    entry = next(entry for _, n, entry in ALL_ENTRIES if n == name)
    assert transforms is not None and callable(im_reader)
    size = entry["transforms"]["args"].get("crop_size", entry["transforms"]["args"]["im_size"])
    assert str(size) in repr(transforms)


def test_from_pretrained_downloads_once_and_loads(
    ckpt_root: Path, dino_file: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5 = hashlib.md5(dino_file).hexdigest()
    with serve_files({"/dino/vits16.pth": dino_file}) as server:
        # the first source is down: the next one is used
        _serve_as(monkeypatch, ViTExtractor, "vits16_dino", url=[unused_local_url(), server.url("/dino/vits16.pth")],
                  hash=md5[:6])  # fmt: skip
        model = ViTExtractor.from_pretrained("vits16_dino").eval()
        again = ViTExtractor.from_pretrained("vits16_dino").eval()
        assert server.requests == ["/dino/vits16.pth"]  # the second call reuses the checked file
    assert (ckpt_root / "vits16_dino.ckpt").read_bytes() == dino_file
    local = ViTExtractor(ckpt_root / "vits16_dino.ckpt", "vits16", normalise_features=False).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), local(x)) and torch.equal(again(x), local(x))


def test_offline_error_names_url_md5_and_path(ckpt_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = unused_local_url("/vits16_sop.ckpt")
    _serve_as(monkeypatch, ViTExtractor, "vits16_sop", url=[url])
    with pytest.raises(DownloadError) as error:
        ViTExtractor.from_pretrained("vits16_sop")
    message = str(error.value)
    assert url in message and "21e743" in message and str(ckpt_root / "vits16_sop.ckpt") in message


def test_wrong_md5_is_refused(ckpt_root: Path, dino_file: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve_files({"/x.pth": dino_file}) as server:
        _serve_as(monkeypatch, ViTExtractor, "vits16_dino", url=[server.url("/x.pth")])  # the real md5 prefix
        with pytest.raises(DownloadError, match="cf0f22"):
            ViTExtractor.from_pretrained("vits16_dino")
    assert not (ckpt_root / "vits16_dino.ckpt").exists()


def test_sha256_of_torchvision_weights_is_checked(
    ckpt_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    torch.save(random_state_dict(read_layout("resnet_resnet18"), seed=1, strip="model."), tmp_path / "r18.pth")
    content = (tmp_path / "r18.pth").read_bytes()
    sha256 = hashlib.sha256(content).hexdigest()
    with serve_files({"/r18.pth": content}) as server:
        _serve_as(monkeypatch, ResnetExtractor, "resnet18_imagenet1k_v1", url=[server.url("/r18.pth")])
        with pytest.raises(DownloadError, match="f37072fd"):  # the real digest prefix does not match
            ResnetExtractor.from_pretrained("resnet18_imagenet1k_v1")
        _serve_as(monkeypatch, ResnetExtractor, "resnet18_imagenet1k_v1", url=[server.url("/r18.pth")],
                  sha256=sha256[:8])  # fmt: skip
        model = ResnetExtractor.from_pretrained("resnet18_imagenet1k_v1")
    assert model.feat_dim == 512 and model.remove_fc


def test_extractor_with_mlp_from_pretrained(ckpt_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.save(random_state_dict(read_layout("extractor_with_mlp_vits16_384"), seed=2), tmp_path / "mlp.ckpt")
    content = (tmp_path / "mlp.ckpt").read_bytes()
    with serve_files({"/mlp.ckpt": content}) as server:
        _serve_as(monkeypatch, ExtractorWithMLP, "vits16_224_mlp_384_inshop", url=[server.url("/mlp.ckpt")],
                  hash=hashlib.md5(content).hexdigest()[:8])  # fmt: skip
        first = ExtractorWithMLP.from_pretrained("vits16_224_mlp_384_inshop")
        second = ExtractorWithMLP.from_pretrained("vits16_224_mlp_384_inshop")
    assert first.train_backbone and first.feat_dim == 384
    assert all(torch.equal(first.state_dict()[k], v) for k, v in second.state_dict().items())


class _RunsCode:
    """Unpickling this creates a file: what a malicious checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_malicious_pickle_is_refused(tmp_path: Path, ckpt_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    weights = random_state_dict(read_layout("vit_vits16"), seed=0, strip="model.")
    torch.save({"state_dict": weights, "extra": _RunsCode(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="evil.ckpt"):
        ViTExtractor(tmp_path / "evil.ckpt", "vits16", normalise_features=False)
    content = (tmp_path / "evil.ckpt").read_bytes()
    with serve_files({"/evil.ckpt": content}) as server:  # a zoo download is read the same way
        _serve_as(monkeypatch, ViTExtractor, "vits16_cars", url=[server.url("/evil.ckpt")],
                  hash=hashlib.md5(content).hexdigest()[:6])  # fmt: skip
        with pytest.raises(UnsafeCheckpointError, match="weights_only=False"):
            ViTExtractor.from_pretrained("vits16_cars")
    assert not marker.exists()


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vits16_cars"):  # the message lists the zoo
        ViTExtractor(tmp_path / "nothing.ckpt", "vits16", normalise_features=False)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing.ckpt")
    with pytest.raises(KeyError, match="vits16_dino"):
        ViTExtractor.from_pretrained("vits17_dino")


class _Holder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def test_torchscript_is_opened_only_with_its_full_md5(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_Holder()), str(path))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match="full md5"):
        load_torchscript_state_dict(path, md5[:8])
    with pytest.raises(UnsafeCheckpointError, match=md5):
        load_torchscript_state_dict(path, "0" * 32)
    assert torch.equal(load_torchscript_state_dict(path, md5)["weight"], torch.arange(4.0))
