from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oml.retrieval.index import SearchIndex, SearchResult
from oml.retrieval.visualization import plot_search_results, save_search_results_html, search_results_to_html


@pytest.fixture(scope="module")
def setup(mock_dataset_root: Path, mock_dataset_dfs):
    _, df_val = mock_dataset_dfs
    df = df_val.head(12)
    paths = [str(mock_dataset_root / p) for p in df["path"]]
    labels = df["label"].tolist()
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(len(paths), 4, generator=g)
    index = SearchIndex(embeddings, ids=paths, labels=labels)
    result = index.search(embeddings[:3] + 0.01, top_k=4)
    return index, result, paths[:3], labels[:3]


def test_png(setup, tmp_path: Path) -> None:
    index, result, query_paths, query_labels = setup
    fig = plot_search_results(result, query_paths, query_labels)
    fig.savefig(tmp_path / "results.png")
    image = np.asarray(Image.open(tmp_path / "results.png").convert("RGB")).astype(int)
    assert image.shape[0] > 100 and image.shape[1] > 300
    n_correct = sum(lbl == q for row, q in zip(result.labels, query_labels) for lbl in row)
    assert 0 < n_correct < result.indices.numel()  # both colours are drawn
    green = ((image[..., 1] > 140) & (image[..., 0] < 100) & (image[..., 2] < 100)).sum()
    red = ((image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)).sum()
    assert green > 0 and red > 0
    with pytest.raises(ValueError, match="2 query paths for 3 queries"):
        plot_search_results(result, query_paths[:2], query_labels)
    with pytest.raises(ValueError, match="index has none"):
        plot_search_results(SearchIndex(index.embeddings).search(index.embeddings[:3], 2), query_paths, query_labels)


def test_html(setup, tmp_path: Path) -> None:
    index, result, query_paths, query_labels = setup
    page = search_results_to_html(result, query_paths, query_labels=query_labels)
    n_correct = sum(lbl == q for row, q in zip(result.labels, query_labels) for lbl in row)
    assert page.count('class="row"') == 3
    assert page.count("#1e9e3a") == n_correct and page.count("#d62828") == result.indices.numel() - n_correct
    assert page.count("data:image/jpeg;base64,") == 3 + result.indices.numel()  # self-contained

    unlabelled = search_results_to_html(result.apply_threshold(float(result.distances[:, 1].min())), query_paths)
    assert "#999999" in unlabelled and "no match" in unlabelled and "#d62828" not in unlabelled
    out = save_search_results_html(result, query_paths, tmp_path / "viewer" / "results.html")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_results_of_an_index_without_the_ids(setup) -> None:
    """A ShardedSearchIndex holds only its shard: its results carry the ids and labels they return."""
    index, result, query_paths, query_labels = setup

    class ShardLike:  # holds no ids or labels, like one shard of a ShardedSearchIndex
        def __len__(self) -> int:
            return len(index)

    returned = {i for row in result.indices.tolist() for i in row}
    keys = ({i: index.ids[i] for i in returned}, {i: index.labels[i] for i in returned})
    carried = SearchResult(result.distances, result.indices, ShardLike(), keys=keys)
    assert search_results_to_html(carried, query_paths, query_labels) == search_results_to_html(
        result, query_paths, query_labels
    )
    assert plot_search_results(carried, query_paths, query_labels) is not None


def test_html_of_evaluation_results(setup) -> None:
    from oml.metrics.retrieval_results import RetrievalResults
    from oml.retrieval.visualization import retrieval_results_to_html

    index, _, query_paths, query_labels = setup
    results = RetrievalResults.from_search(index, index.embeddings[:3] + 0.01, query_labels, top_k=4)
    page = retrieval_results_to_html(results, query_paths, index.ids, n_instances=4)
    hits = int(results.gt_tops.sum())
    assert page.count('class="row"') == 3
    assert page.count("#1e9e3a") == hits and page.count("#d62828") == 12 - hits
    assert page == retrieval_results_to_html(results, query_paths, index.ids, query_positions=[0, 1, 2], n_instances=4)
    with pytest.raises(ValueError, match="Expected 3 query paths"):
        retrieval_results_to_html(results, query_paths[:2], index.ids)
