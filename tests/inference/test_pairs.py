from pathlib import Path

import pytest
import torch

from oml.inference.pairs import pairwise_inference_on_embeddings, pairwise_inference_on_images
from oml.models.meta.siamese import ConcatSiamese, LinearTrivialDistanceSiamese, TrivialDistanceSiamese
from tests.inference.helpers import TinyExtractor, embed_by_hand, read_by_hand, tiny_transforms


@pytest.fixture(scope="module")
def paths(mock_dataset_root: Path):
    return sorted((mock_dataset_root / "images").glob("*.jpg"))[:9]


@pytest.mark.parametrize("batch_size, num_workers", [(1, 0), (4, 0), (50, 2)])
def test_pairwise_on_images_same_as_by_hand(paths, batch_size: int, num_workers: int) -> None:
    paths1, paths2 = paths, paths[::-1]
    model = ConcatSiamese(TinyExtractor(), mlp_hidden_dims=[4]).train()
    with torch.no_grad():
        x1, x2 = read_by_hand(paths1, tiny_transforms()), read_by_hand(paths2, tiny_transforms())
        expected = model.eval().predict(x1, x2)
    model.train()
    got = pairwise_inference_on_images(
        model, paths1, paths2, tiny_transforms(), num_workers=num_workers, batch_size=batch_size, verbose=False
    )
    assert got.shape == (len(paths),) and torch.allclose(got, expected, atol=1e-6)
    assert model.training


def test_pairwise_on_images_with_boxes(paths) -> None:
    model = TrivialDistanceSiamese(TinyExtractor())
    boxes1 = [(0, 0, 40, 40)] * len(paths)
    got = pairwise_inference_on_images(
        model, paths, paths, tiny_transforms(), num_workers=0, batch_size=4, verbose=False, bboxes1=boxes1
    )
    e1 = embed_by_hand(model.extractor, paths, tiny_transforms(), boxes1)
    e2 = embed_by_hand(model.extractor, paths, tiny_transforms())
    assert torch.allclose(got, (e1 - e2).norm(dim=1), atol=1e-5) and (got > 0).all()


@pytest.mark.parametrize("batch_size, num_workers", [(1, 0), (7, 0), (64, 1)])
def test_pairwise_on_embeddings_same_as_by_hand(batch_size: int, num_workers: int) -> None:
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.randn(33, 5, generator=g), torch.randn(33, 5, generator=g)
    model = LinearTrivialDistanceSiamese(feat_dim=5, identity_init=False)
    got = pairwise_inference_on_embeddings(model, e1, e2, num_workers=num_workers, batch_size=batch_size)
    expected = torch.stack([(model.proj.weight @ (a - b)).norm() for a, b in zip(e1, e2)]).detach()
    assert torch.allclose(got, expected, atol=1e-5)


def test_pairwise_bad_input(paths) -> None:
    model = LinearTrivialDistanceSiamese(feat_dim=5, identity_init=True)
    with pytest.raises(ValueError, match="same shape"):
        pairwise_inference_on_embeddings(model, torch.zeros(3, 5), torch.zeros(4, 5), num_workers=0, batch_size=2)
    with pytest.raises(ValueError, match="same length"):
        pairwise_inference_on_images(model, paths, paths[:2], tiny_transforms(), num_workers=0, batch_size=2)


def test_rescoring_with_a_trivial_model_keeps_the_order_with_use_fp16_on_cpu() -> None:
    # galleries at distances 1.000, 1.001, 1.002, ... from the query: a trivial pairwise model must keep this order
    g = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(1, 16, generator=g), dim=1)
    query = torch.randn(1, 16, generator=g)
    galleries = query + (1 + 1e-3 * torch.arange(40.0)).unsqueeze(1) * direction
    queries = query.expand(40, -1)
    model = LinearTrivialDistanceSiamese(feat_dim=16, identity_init=True)

    by_batch = [
        pairwise_inference_on_embeddings(model, queries, galleries, num_workers=0, batch_size=bs, use_fp16=True)
        for bs in (1, 7, 40)
    ]
    assert torch.equal(by_batch[0], by_batch[1]) and torch.equal(by_batch[0], by_batch[2])  # bit-equal
    assert (by_batch[0].diff() > 0).all()  # the order is kept
    # the explicit bfloat16 opt-in rounds the distances to ~3 digits: they tie or swap
    low = pairwise_inference_on_embeddings(
        model, queries, galleries, num_workers=0, batch_size=40, use_bf16_on_cpu=True
    )
    assert not (low.diff() > 0).all()
