"""The "Using a trained model for retrieval" snippet of OML 0.4.4's README runs unchanged (weights served locally)."""

import hashlib
import importlib.util
import re
from pathlib import Path

import pytest
import torch

import oml.const
from oml.models import ViTExtractor
from oml.retrieval.index import SearchIndex
from oml.utils.misc_torch import pairwise_dist
from tests.models.layout_utils import README_0_4_4, random_state_dict, read_layout
from tests.utils.http_server import serve_files


def _retrieval_snippet() -> str:
    text = README_0_4_4.read_text()
    pattern = r"\[comment\]:usage-retrieval-start\n```python\n(.*?)```\n\[comment\]:usage-retrieval-end"
    block = re.search(pattern, text, flags=re.S)
    assert block is not None, "the retrieval snippet is missing from the 0.4.4 README"
    return block.group(1)


@pytest.mark.timeout(240)
def test_readme_retrieval_snippet(
    mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    snippet = _retrieval_snippet()
    assert "use_knn = True" in snippet and "inference_on_images(extractor, paths=queries" in snippet
    if importlib.util.find_spec("sklearn") is None:  # scikit-learn is optional: run the other branch then
        snippet = snippet.replace("use_knn = True", "use_knn = False")

    torch.save(random_state_dict(read_layout("vit_vits16"), seed=5, strip="model."), tmp_path / "dino.pth")
    content = (tmp_path / "dino.pth").read_bytes()
    monkeypatch.setattr(oml.const, "CKPT_SAVE_ROOT", tmp_path / "checkpoints")
    with serve_files({"/dino.pth": content}) as server:
        entry = {
            **ViTExtractor.pretrained_models["vits16_dino"],
            "url": [server.url("/dino.pth")],
            "hash": hashlib.md5(content).hexdigest()[:6],
            # 64 px instead of 224 px: the ViT runs 16x fewer tokens, so the test fits the CPU time budget
            "transforms": {"name": "norm_resize_torch", "args": {"im_size": 64}},
        }
        monkeypatch.setitem(ViTExtractor.pretrained_models, "vits16_dino", entry)
        namespace: dict = {}
        exec(compile(snippet, "oml-readme-0.4.4.md (retrieval)", "exec"), namespace)

    queries, galleries = namespace["features_queries"], namespace["features_galleries"]
    assert queries.shape == (len(namespace["queries"]), 384) and galleries.shape == (len(namespace["galleries"]), 384)
    assert namespace["ii_closest"].shape == (len(queries), 3)
    assert "Top 3 items closest to queries are" in capsys.readouterr().out

    # sklearn's answer (the use_knn=True branch), the use_knn=False branch and our SearchIndex agree; every
    # query is also a gallery item here, so its nearest gallery is itself at distance 0 (exactly 0 for us;
    # cdist's GEMM formula leaves a cancellation error of about 1e-2 at these norms)
    result = SearchIndex(galleries).search(queries, top_k=3)
    assert torch.equal(result.indices, torch.as_tensor(namespace["ii_closest"]))
    assert torch.allclose(result.distances, torch.as_tensor(namespace["dists"]).float(), atol=1e-4)
    assert (result.distances[:, 0] == 0).all()
    dist_mat = pairwise_dist(x1=queries, x2=galleries)
    dists, ii_closest = torch.topk(dist_mat, dim=1, k=3, largest=False)
    assert torch.equal(result.indices[:, 1:], ii_closest[:, 1:])
    assert torch.allclose(result.distances, dists, atol=0.05)
