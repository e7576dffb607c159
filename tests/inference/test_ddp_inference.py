"""Inference under DDP (2 CPU processes, gloo, file:// init): every item is computed once, results in input order."""

from pathlib import Path
from typing import List

import pytest
import torch

from oml.inference.flat import inference_on_images
from oml.inference.pairs import pairwise_inference_on_embeddings
from oml.models.meta.siamese import LinearTrivialDistanceSiamese
from tests.inference.helpers import TinyExtractor, embed_by_hand, read_by_hand, tiny_transforms
from tests.utils.ddp import run_in_gloo_group

WORLD_SIZE = 2
N_IMAGES = 11  # odd: the processes get different numbers of items
N_PAIRS = 7


class Counting(TinyExtractor):
    def __init__(self) -> None:
        super().__init__()
        self.ids_seen: List[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ids_seen.extend(x.double().sum(dim=(1, 2, 3)).tolist())  # the sum of the pixels identifies the image
        return super().forward(x)


def pairs_data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(N_PAIRS, 5, generator=g), torch.randn(N_PAIRS, 5, generator=g)


def _worker(rank: int, out_dir: str, paths: List[str]) -> None:
    model = Counting()
    embeddings = inference_on_images(model, paths, tiny_transforms(), num_workers=0, batch_size=3)
    siamese = LinearTrivialDistanceSiamese(feat_dim=5, identity_init=False)
    e1, e2 = pairs_data()
    scores = pairwise_inference_on_embeddings(siamese, e1, e2, num_workers=0, batch_size=2)
    torch.save(
        {"embeddings": embeddings, "seen": model.ids_seen, "scores": scores, "proj": siamese.proj.weight},
        Path(out_dir) / f"{rank}.pt",
    )


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_ddp_inference_each_item_once_in_order(mock_dataset_root: Path, tmp_path: Path) -> None:
    paths = [str(p) for p in sorted((mock_dataset_root / "images").glob("*.jpg"))[:N_IMAGES]]
    run_in_gloo_group(_worker, WORLD_SIZE, tmp_path, str(tmp_path), paths, timeout=100)

    results = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    expected = embed_by_hand(TinyExtractor(), paths, tiny_transforms())
    seen = sorted(v for r in results for v in r["seen"])
    sums = sorted(read_by_hand(paths, tiny_transforms()).double().sum(dim=(1, 2, 3)).tolist())
    assert len(set(sums)) == N_IMAGES
    assert seen == pytest.approx(sums), "every image must be embedded exactly once over all processes"
    assert all(len(r["seen"]) in (N_IMAGES // 2, N_IMAGES // 2 + 1) for r in results)
    for r in results:  # every process gets all the embeddings, in the order of the paths
        assert torch.allclose(r["embeddings"], expected, atol=1e-6)
    e1, e2 = pairs_data()
    proj = results[0]["proj"]
    assert torch.equal(proj, results[1]["proj"])
    expected_scores = ((e1 - e2) @ proj.T).norm(dim=1)
    for r in results:
        assert torch.allclose(r["scores"], expected_scores, atol=1e-5)
