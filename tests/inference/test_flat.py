import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import oml.inference.flat as flat
from oml.inference.abstract import _inference, get_autocast, inference, order_by_ids
from oml.inference.flat import embeddings_cache_key, inference_on_dataframe, inference_on_images
from oml.transforms.images.torchvision import get_normalisation_resize_torch
from tests.inference.helpers import TinyExtractor, embed_by_hand, tiny_transforms


@pytest.fixture(scope="module")
def paths(mock_dataset_root: Path):
    return sorted((mock_dataset_root / "images").glob("*.jpg"))[:13]


@pytest.mark.parametrize("batch_size, num_workers", [(1, 0), (4, 0), (5, 2), (100, 1)])
def test_same_as_by_hand(paths, batch_size: int, num_workers: int) -> None:
    model = TinyExtractor().train()
    expected = embed_by_hand(model, paths, tiny_transforms())
    got = inference_on_images(model, paths, tiny_transforms(), num_workers=num_workers, batch_size=batch_size)
    assert got.shape == (len(paths), 6)
    assert torch.allclose(got, expected, atol=1e-6)
    assert model.training, "the mode of the model must be restored"


def test_with_bboxes(paths) -> None:
    bboxes = [None if i % 3 == 0 else (i, 2 * i % 20, 50 + i, 60 + i) for i in range(len(paths))]
    model = TinyExtractor()
    expected = embed_by_hand(model, paths, tiny_transforms(), bboxes)
    got = inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=4, bboxes=bboxes)
    assert torch.allclose(got, expected, atol=1e-6)
    whole = inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=4)
    assert torch.allclose(got[0], whole[0], atol=1e-6) and not torch.allclose(got[1], whole[1], atol=1e-3)


def test_use_fp16_on_cpu_is_float32_as_in_oml(paths) -> None:
    model = TinyExtractor()
    runs = {}
    for batch_size in (1, 4, 13):
        full = inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=batch_size)
        half = inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=batch_size, use_fp16=True)
        assert half.dtype == torch.float32 and torch.equal(full, half)  # OML: the flag is ignored on the CPU
        runs[batch_size] = half
    # float32 GEMMs may block differently for other batch sizes: equal up to float32 rounding only
    assert torch.allclose(runs[1], runs[13], rtol=0, atol=1e-6) and torch.allclose(runs[4], runs[13], rtol=0, atol=1e-6)
    assert not isinstance(get_autocast(torch.device("cpu"), True), torch.autocast)
    with warnings.catch_warnings():  # "CUDA is not available" on this machine
        warnings.simplefilter("ignore")
        assert get_autocast(torch.device("cuda"), True).fast_dtype == torch.float16
        assert not isinstance(get_autocast(torch.device("cuda"), False, use_bf16_on_cpu=True), torch.autocast)


def test_bf16_on_cpu_is_an_explicit_opt_in(paths) -> None:
    model = TinyExtractor()
    full = inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=8)
    low = inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=8, use_bf16_on_cpu=True)
    assert low.dtype == torch.float32  # returned in float32 ...
    assert torch.allclose(full, low, atol=0.05, rtol=0.05) and not torch.allclose(full, low, rtol=0, atol=1e-4)
    ctx = get_autocast(torch.device("cpu"), False, use_bf16_on_cpu=True)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert _inference is inference  # OML 0.4.4's name of the shared loop


def test_progress_bar_and_bad_arguments(paths, capsys) -> None:
    model = TinyExtractor()
    inference_on_images(model, paths[:3], tiny_transforms(), num_workers=0, batch_size=2, verbose=True)
    assert "Inference on cpu" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0."):
        inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=0)
    with pytest.raises(ValueError, match="num_workers must be a non-negative integer, got -1."):
        inference_on_images(model, paths, tiny_transforms(), num_workers=-1, batch_size=2)
    with pytest.raises(TypeError, match="batch_size must be a positive integer, got True of type bool."):
        inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=True)
    assert (
        len(inference_on_images(model, paths[:3], tiny_transforms(), num_workers=np.int64(0), batch_size=np.int32(2)))
        == 3
    )
    with pytest.raises(ValueError, match="empty dataset"):
        inference_on_images(model, [], tiny_transforms(), num_workers=0, batch_size=2)
    with pytest.raises(TypeError, match="index_key"):
        inference(model, lambda m, b: b, [1, 2], 0, 1, False, False)


def test_order_by_ids_restores_order_and_checks_coverage() -> None:
    outputs = torch.arange(6.0)[:, None] * torch.ones(1, 2)
    ids = torch.tensor([3, 0, 4, 1, 2, 0])  # a padded duplicate of item 0 at the end
    assert order_by_ids(outputs, ids, 5)[:, 0].tolist() == [1.0, 3.0, 4.0, 0.0, 2.0]
    with pytest.raises(RuntimeError, match="1 of 6 items are missing"):
        order_by_ids(outputs, ids, 6)


@pytest.fixture()
def table(mock_dataset_root: Path, tmp_path: Path) -> Path:
    """A small copy of the mock table with boxes (its images are copied, so their mtime can be changed)."""
    df = pd.read_csv(mock_dataset_root / "df_with_bboxes.csv")
    df = pd.concat([df[df["split"] == "train"].head(8), df[df["split"] == "validation"].head(12)])
    (tmp_path / "images").mkdir()
    for p in df["path"]:
        (tmp_path / p).write_bytes((mock_dataset_root / p).read_bytes())
    df.to_csv(tmp_path / "df.csv", index=False)
    return tmp_path


def test_inference_on_dataframe_and_its_cache(table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, cache = TinyExtractor(), table / "cache" / "emb.pkl"
    args = {"dataset_root": table, "dataframe_name": "df.csv", "transforms": tiny_transforms(), "verbose": False}
    emb_train, emb_val, df_train, df_val = inference_on_dataframe(extractor=model, output_cache_path=cache, **args)
    df = pd.read_csv(table / "df.csv")
    boxes = [None if pd.isna(r.x_1) else (int(r.x_1), int(r.y_1), int(r.x_2), int(r.y_2)) for r in df.itertuples()]
    expected = embed_by_hand(model, [table / p for p in df["path"]], tiny_transforms(), boxes)
    assert torch.allclose(torch.cat([emb_train, emb_val]), expected, atol=1e-6)
    assert len(df_train) == 8 and len(df_val) == 12 and list(df_val.index) == list(range(12))
    saved = torch.load(cache, weights_only=True)  # a safe format
    assert torch.equal(saved["embeddings"], torch.cat([emb_train, emb_val]))

    calls = []
    real = flat.inference_on_images
    monkeypatch.setattr(flat, "inference_on_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = inference_on_dataframe(extractor=model, output_cache_path=cache, **args)
    assert calls == [] and torch.equal(again[0], emb_train)  # loaded from the cache

    other = TinyExtractor(seed=1)  # other weights -> recomputed
    assert not torch.allclose(inference_on_dataframe(extractor=other, output_cache_path=cache, **args)[0], emb_train)
    assert len(calls) == 1
    args_t = {**args, "transforms": get_normalisation_resize_torch(im_size=20)}  # other transforms -> recomputed
    inference_on_dataframe(extractor=model, output_cache_path=cache, **args_t)
    assert len(calls) == 2
    inference_on_dataframe(extractor=model, output_cache_path=cache, **args)
    assert len(calls) == 3
    inference_on_dataframe(extractor=model, output_cache_path=cache, **args)
    assert len(calls) == 3  # the same setup again: cached
    path = table / df["path"][0]  # the data changed -> recomputed
    path.write_bytes(path.read_bytes() + b"\0")
    inference_on_dataframe(extractor=model, output_cache_path=cache, **args)
    assert len(calls) == 4

    torch.save(torch.zeros(3, 3), cache)  # an OML cache (a bare tensor) is not trusted
    inference_on_dataframe(extractor=model, output_cache_path=cache, **args)
    assert len(calls) == 5


def test_cache_key_depends_on_what_it_should(paths) -> None:
    model = TinyExtractor()
    key = embeddings_cache_key(model, tiny_transforms(), paths)
    assert key == embeddings_cache_key(TinyExtractor(), tiny_transforms(), paths)
    with torch.no_grad():
        model.body[1].running_mean[0] += 1e-3  # buffers count
    assert key != embeddings_cache_key(model, tiny_transforms(), paths)
    assert key != embeddings_cache_key(TinyExtractor(), tiny_transforms(), paths, use_fp16=True)
    assert key != embeddings_cache_key(TinyExtractor(), tiny_transforms(), paths, use_bf16_on_cpu=True)
    assert key != embeddings_cache_key(TinyExtractor(), tiny_transforms(), paths[:-1])
    assert key != embeddings_cache_key(TinyExtractor(), tiny_transforms(), paths, bboxes=[None] * len(paths))
