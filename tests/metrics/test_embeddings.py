import warnings
from typing import Any, Dict, List

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset

from oml.functional.metrics import calc_retrieval_metrics, calc_topological_metrics
from oml.interfaces.retrieval import IDistancesPostprocessor
from oml.metrics.embeddings import EmbeddingMetrics, validate_dataset
from oml.utils.misc import flatten_dict
from tests.utils.oracles import dense_distances

matplotlib.use("Agg")

KS = (1, 3, 10)


class DictDataset(Dataset):
    def __init__(self, **columns: Any):
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {key: values[i] for key, values in self.columns.items()}


def make_data(n: int = 120, n_labels: int = 12, dim: int = 8, seed: int = 0, query_share: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % n_labels
    centers = torch.randn(n_labels, dim, generator=g)
    embeddings = centers[labels] + 0.8 * torch.randn(n, dim, generator=g)
    is_query = torch.rand(n, generator=g) < query_share
    is_gallery = torch.ones(n, dtype=torch.bool)
    categories = np.array(["odd" if int(label) % 2 else "even" for label in labels])
    return {
        "embeddings": embeddings,
        "labels": labels,
        "is_query": is_query,
        "is_gallery": is_gallery,
        "categories": categories.tolist(),
    }


def dense_reference(storage: Dict[str, Any], query_mask=None, **kwargs) -> Dict[str, Any]:
    """The metrics computed densely (OML's way) on the accumulated storage."""
    emb = storage["embeddings"]
    is_query, is_gallery = storage["is_query"].bool(), storage["is_gallery"].bool()
    ids = torch.arange(len(emb))
    q, g = ids[is_query], ids[is_gallery]
    if query_mask is not None:
        q = q[query_mask]
    distances = dense_distances(emb[q], emb[g])
    labels = storage["labels"]
    mask_gt = labels[q][:, None] == labels[g][None, :]
    ignore = q[:, None] == g[None, :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calc_retrieval_metrics(distances, mask_gt, ignore, **kwargs)


def run_epoch(metric: EmbeddingMetrics, loader: DataLoader) -> Dict[str, Any]:
    metric.setup(num_samples=len(loader.dataset))
    for batch in loader:
        metric.update_data(batch)
    return metric.compute_metrics()


@pytest.mark.parametrize("batch_size", [1, 7, 32, 500])
def test_through_dataloader_equals_dense_reference(batch_size):
    data = make_data()
    loader = DataLoader(DictDataset(**data), batch_size=batch_size, shuffle=True)
    metric = EmbeddingMetrics(cmc_top_k=KS, precision_top_k=KS, map_top_k=KS, fmr_vals=(0.1, 0.5), verbose=False)
    for _ in range(3):  # several epochs reuse the same object
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # k=10 > nothing here, but keep the test quiet anyway
            result = run_epoch(metric, loader)
        reference = dense_reference(
            metric.acc.storage, cmc_top_k=KS, precision_top_k=KS, map_top_k=KS, fmr_vals=(0.1, 0.5)
        )
        overall = result["OVERALL"]
        for name in ("cmc", "precision", "map", "fnmr@fmr"):
            for key, value in reference[name].items():
                assert torch.isclose(overall[name][key], value, atol=1e-6), (name, key)
        unreduced = dense_reference(metric.acc.storage, cmc_top_k=KS, precision_top_k=KS, map_top_k=KS, reduce=False)
        for name in ("cmc", "precision", "map"):
            for key, value in unreduced[name].items():
                assert torch.equal(metric.metrics_unreduced["OVERALL"][name][key], value)
        expected_pcf = calc_topological_metrics(metric.acc.storage["embeddings"], (0.5,))["pcf"][0.5]
        assert torch.equal(overall["pcf"][0.5], expected_pcf)


def test_shuffled_epochs_give_the_same_metrics():
    data = make_data(seed=1)
    loader = DataLoader(DictDataset(**data), batch_size=16, shuffle=True)
    metric = EmbeddingMetrics(cmc_top_k=KS, precision_top_k=KS, map_top_k=KS, verbose=False)
    first = run_epoch(metric, loader)
    second = run_epoch(metric, loader)
    for name in ("cmc", "precision", "map"):
        for k in KS:
            assert torch.isclose(first["OVERALL"][name][k], second["OVERALL"][name][k], atol=1e-6)


def test_separate_queries_and_galleries_and_categories():
    data = make_data(n=150, seed=2, query_share=0.5)
    data["is_gallery"] = ~data["is_query"] | (torch.arange(150) % 3 == 0)  # overlapping sets
    loader = DataLoader(DictDataset(**data), batch_size=20, shuffle=False)
    metric = EmbeddingMetrics(
        cmc_top_k=(1, 5),
        precision_top_k=(5,),
        map_top_k=(5,),
        fmr_vals=(0.2,),
        categories_key="categories",
        verbose=False,
    )
    result = run_epoch(metric, loader)
    assert set(result) == {"OVERALL", "even", "odd"}
    storage = metric.acc.storage
    query_categories = np.array(storage["categories"])[storage["is_query"].numpy()]
    for category in ("even", "odd"):
        mask = torch.from_numpy(query_categories == category)
        reference = dense_reference(
            storage, query_mask=mask, cmc_top_k=(1, 5), precision_top_k=(5,), map_top_k=(5,), fmr_vals=(0.2,)
        )
        for name in ("cmc", "precision", "map", "fnmr@fmr"):
            for key, value in reference[name].items():
                assert torch.isclose(result[category][name][key], value, atol=1e-6), (category, name, key)
        unreduced = dense_reference(
            storage, query_mask=mask, cmc_top_k=(1, 5), precision_top_k=(5,), map_top_k=(5,), reduce=False
        )
        for name in ("cmc", "precision", "map"):
            for key, value in unreduced[name].items():
                assert torch.equal(metric.metrics_unreduced[category][name][key], value), (category, name, key)
        in_category = torch.from_numpy(np.array(storage["categories"]) == category)
        pcf = calc_topological_metrics(storage["embeddings"][in_category], (0.5,))["pcf"][0.5]
        assert torch.equal(result[category]["pcf"][0.5], pcf)
    only_overall = EmbeddingMetrics(categories_key="categories", return_only_main_category=True, verbose=False)
    assert set(run_epoch(only_overall, loader)) == {"OVERALL"}


def test_lazy_dense_attributes():
    data = make_data(n=40, seed=3)
    metric = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(), pfc_variance=(), verbose=False)
    assert metric.distance_matrix is None
    metric.setup(40)
    metric.update_data(data)
    metric.compute_metrics()
    assert metric._dense_distances is None  # not built by compute_metrics
    distances = metric.distance_matrix
    assert distances.shape == (40, 40) and torch.isinf(distances.diagonal()).all()
    assert torch.equal(
        metric.mask_gt, (data["labels"][:, None] == data["labels"][None]) & ~torch.eye(40, dtype=torch.bool)
    )
    validate_dataset(metric.mask_gt, torch.eye(40, dtype=torch.bool))


# ----------------------------------------------------------------------------------------- postprocessing
class SecondOpinion(IDistancesPostprocessor):
    """Test-only: replaces the distances of each query's top-n with distances in another embedding space."""

    def __init__(self, top_n: int, key: str = "other"):
        self.top_n = top_n
        self.key = key

    @property
    def needed_keys(self) -> List[str]:
        return [self.key, "is_query", "is_gallery"]

    def _new(self, query_rows, retrieved_rows, data):
        other = data[self.key]
        return (other[query_rows][:, None, :] - other[retrieved_rows]).norm(dim=-1) + 0.5

    def process_top_n(self, distances, query_ids, retrieved_ids, data):
        return self._new(query_ids, retrieved_ids, data)

    def process(self, distances, queries, galleries):  # OML's dense contract, used by the dense fallback below
        raise NotImplementedError

    def process_by_dict(self, distances, data):
        """OML's algorithm: re-score the top-n, shift the rest so that it stays after them."""
        distances = distances.clone()
        query_rows = data["is_query"].nonzero().flatten()
        gallery_rows = data["is_gallery"].nonzero().flatten()
        top_n = min(self.top_n, distances.shape[1])
        order = torch.argsort(distances, dim=1, stable=True)
        ii_top = order[:, :top_n]
        new = self._new(query_rows, gallery_rows[ii_top], data)
        if top_n < distances.shape[1]:
            next_old = distances.gather(1, order[:, top_n : top_n + 1])
            distances += (new.max(dim=1, keepdim=True).values - next_old + 1).clamp_min(0)
        distances.scatter_(1, ii_top, new)
        return distances


class DenseOnly(SecondOpinion):
    top_n = None  # without top_n EmbeddingMetrics uses the dense process_by_dict

    def __init__(self, top_n: int):
        super().__init__(top_n)
        self._n, self.top_n = top_n, None

    def process_by_dict(self, distances, data):
        self.top_n = self._n
        try:
            return super().process_by_dict(distances, data)
        finally:
            self.top_n = None


def test_top_n_postprocessor_equals_dense_postprocessing():
    data = make_data(n=90, seed=4)
    data["other"] = torch.randn(90, 4)
    kwargs = {"cmc_top_k": (1, 3), "precision_top_k": (3,), "map_top_k": (5,), "pfc_variance": (), "verbose": False}
    fast = EmbeddingMetrics(postprocessor=SecondOpinion(top_n=4), **kwargs)
    fast.setup(90)
    fast.update_data(data)
    fast_result = fast.compute_metrics()
    assert fast._dense_distances is None
    dense = EmbeddingMetrics(postprocessor=DenseOnly(top_n=4), **kwargs)
    dense.setup(90)
    dense.update_data(data)
    with pytest.warns(UserWarning, match="dense"):
        dense_result = dense.compute_metrics()
    fast_flat, dense_flat = flatten_dict(fast_result), flatten_dict(dense_result)
    assert fast_flat.keys() == dense_flat.keys()
    for name, value in dense_flat.items():
        assert torch.isclose(fast_flat[name], value), name
    plain = EmbeddingMetrics(**kwargs)
    plain.setup(90)
    plain.update_data(data)
    assert plain.compute_metrics() != fast_result  # the postprocessor changed something


# ----------------------------------------------------------------------------------------- bad input
def filled_metric(data: Dict[str, Any], **kwargs: Any) -> EmbeddingMetrics:
    metric = EmbeddingMetrics(verbose=False, **kwargs)
    metric.setup(len(data["labels"]))
    metric.update_data(data)
    return metric


def test_queries_without_gallery_answers():
    data = make_data(n=30, n_labels=5, seed=5)
    data["labels"] = data["labels"].clone()
    data["labels"][[4, 11]] = torch.tensor([100, 101])  # unique labels: no other gallery item
    with pytest.raises(ValueError, match=r"2 of 30 queries .*samples \[4, 11\].*labels \[100, 101\]"):
        filled_metric(data, raise_on_queries_without_match=True).compute_metrics()
    # by default they are scored as misses, counted and reported (OML 4.0 warns too)
    metric = filled_metric(data, cmc_top_k=(1, 5))
    with pytest.warns(UserWarning, match="2 of 30 queries have no relevant gallery item"):
        result = metric.compute_metrics()
    assert result["OVERALL"]["n_queries_without_match"] == 2
    for name, values in flatten_dict(metric.metrics_unreduced).items():
        if isinstance(values, torch.Tensor) and values.ndim == 1:
            assert values[[4, 11]].tolist() == [0.0, 0.0], name


def test_nan_embeddings():
    data = make_data(n=30, seed=6)
    data["embeddings"] = data["embeddings"].clone()
    data["embeddings"][7, 0] = float("nan")
    with pytest.raises(ValueError, match=r"embeddings contain NaN or inf in 1 of 30 rows \(e.g. rows \[7\]\)"):
        filled_metric(data).compute_metrics()


def test_empty_query_or_gallery_set():
    data = make_data(n=30, seed=7)
    data["is_query"] = torch.zeros(30, dtype=torch.bool)
    with pytest.raises(ValueError, match="0 queries and 30 gallery items"):
        filled_metric(data).compute_metrics()


def test_wrong_shapes_and_types():
    data = make_data(n=30, seed=8)
    bad = dict(data, embeddings=data["embeddings"][:, 0])
    with pytest.raises(ValueError, match="embeddings must be a 2D tensor \\[N, D\\]"):
        filled_metric(bad).compute_metrics()
    metric = EmbeddingMetrics(verbose=False)
    metric.setup(30)
    with pytest.raises(ValueError, match="same length"):
        metric.update_data(dict(data, labels=data["labels"][:10]))
    with pytest.raises(KeyError, match="is_gallery"):
        metric.update_data({k: v for k, v in data.items() if k != "is_gallery"})
    with pytest.raises(ValueError, match="only bools or 0/1"):
        filled_metric(dict(data, is_query=torch.full((30,), 2))).compute_metrics()
    with pytest.raises(ValueError, match="positive integers"):
        EmbeddingMetrics(cmc_top_k=(0,))
    with pytest.raises(ValueError, match="fmr_vals"):
        EmbeddingMetrics(fmr_vals=(5,))


def test_too_many_samples_and_compute_before_full():
    data = make_data(n=30, seed=9)
    metric = EmbeddingMetrics(verbose=False)
    metric.setup(20)
    with pytest.raises(ValueError, match="batch of 30 samples, but only 20 of the expected 20 remain"):
        metric.update_data(data)
    metric.setup(40)
    metric.update_data(data)
    with pytest.raises(ValueError, match="all the expected 40 samples .* got 30: 10 samples are missing"):
        metric.compute_metrics()
    with pytest.raises(ValueError, match="call setup"):
        EmbeddingMetrics(verbose=False).compute_metrics()


def test_k_larger_than_gallery_warns_and_is_keyed_by_the_original_k():
    data = make_data(n=20, n_labels=4, seed=10)
    metric = filled_metric(data, cmc_top_k=(50,), precision_top_k=(), map_top_k=())
    with pytest.warns(UserWarning, match="larger than the number of gallery items"):
        result = metric.compute_metrics()
    assert result["OVERALL"]["cmc"][50] == 1.0


def test_verbose_prints(capsys):
    data = make_data(n=20, n_labels=4, seed=11)
    metric = filled_metric(data, cmc_top_k=(1,))
    metric.verbose = True
    metric.compute_metrics()
    assert "OVERALL" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- visualisation
@pytest.fixture
def mock_metric(mock_dataset_root, mock_dataset_dfs):
    _, df_val = mock_dataset_dfs
    n = len(df_val)
    torch.manual_seed(0)
    bboxes = pd.read_csv(mock_dataset_root / "df_with_bboxes.csv")
    bboxes = bboxes[bboxes["split"] == "validation"].reset_index(drop=True)
    data = {
        "embeddings": torch.randn(n, 16),
        "labels": torch.tensor(df_val["label"].values),
        "is_query": torch.tensor(df_val["is_query"].values),
        "is_gallery": torch.tensor(df_val["is_gallery"].values),
        "paths": [str(mock_dataset_root / p) for p in df_val["path"]],
        "categories": [p.split("/")[-1].split("_")[0] for p in df_val["path"]],
        "x1": torch.tensor(bboxes["x_1"].values, dtype=torch.float),
        "y1": torch.tensor(bboxes["y_1"].values, dtype=torch.float),
        "x2": torch.tensor(bboxes["x_2"].values, dtype=torch.float),
        "y2": torch.tensor(bboxes["y_2"].values, dtype=torch.float),
    }
    metric = EmbeddingMetrics(
        extra_keys=("paths", "x1", "y1", "x2", "y2"),
        cmc_top_k=(1, 5),
        precision_top_k=(5,),
        map_top_k=(5,),
        categories_key="categories",
        metrics_to_exclude_from_visualization=("precision",),
        verbose=False,
    )
    loader = DataLoader(DictDataset(**data), batch_size=10, shuffle=False)
    run_epoch(metric, loader)
    return metric


def mosaic_shape(fig: Figure):
    from oml.metrics.plotting import GAP, IMAGE_SIZE

    height, width, channels = fig.axes[0].get_images()[0].get_array().shape
    assert channels == 3
    return height // (IMAGE_SIZE + GAP), width // (IMAGE_SIZE + GAP)


def test_visualize(mock_metric):
    assert mock_metric.ready_to_visualize()
    figures, titles = mock_metric.visualize()
    assert titles == ["top 5 worst by OVERALL_cmc_1", "top 5 worst by OVERALL_cmc_5", "top 5 worst by OVERALL_map_5"]
    assert all(isinstance(f, Figure) for f in figures)
    assert mosaic_shape(figures[0]) == (5, 1 + 5 + 2)
    mock_metric.visualize_only_main_category = False
    mock_metric.metrics_to_exclude_from_visualization += ["cmc"]
    _, titles = mock_metric.visualize()
    n_categories = len(set(mock_metric.acc.storage["categories"]))
    assert "top 5 worst by circle_map_5" in titles and len(titles) == 1 + n_categories


def test_worst_queries(mock_metric):
    values = mock_metric.metrics_unreduced["OVERALL"]["map"][5]
    worst = mock_metric.get_worst_queries_ids("OVERALL/map/5", 4)
    assert values[worst].tolist() == sorted(values.tolist())[:4]
    square = mock_metric.get_worst_queries_ids("square/map/5", 3)  # positions in the whole query list
    paths = mock_metric.acc.storage["paths"]
    query_rows = mock_metric.retrieval_results.query_ids
    assert all("square" in paths[int(query_rows[i])] for i in square)
    with pytest.raises(KeyError, match="Unknown metric"):
        mock_metric.get_worst_queries_ids("OVERALL/cmc/2", 3)
    with pytest.raises(ValueError, match="not a per-query metric"):
        mock_metric.get_worst_queries_ids("OVERALL/pcf/0.5", 3)


def test_plots_for_queries(mock_metric):
    fig = mock_metric.get_plot_for_queries([0, 3], n_instances=8, verbose=False)  # more than retrieved: recomputed
    assert isinstance(fig, Figure) and mosaic_shape(fig) == (2, 1 + 8 + 2)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("query") == 2 and texts.count("GT") == 4 and len(texts) == 2 * (1 + 8 + 2)
    distances = [float(t) for t in texts if t not in ("query", "GT")]
    assert distances[:8] == sorted(distances[:8])
    fig.canvas.draw()  # renders with Agg
    fig = mock_metric.get_plot_for_worst_queries("OVERALL/cmc/1", n_queries=2, n_instances=3)
    assert mosaic_shape(fig) == (2, 1 + 3 + 2)
    with pytest.raises(ValueError, match="positions in"):
        mock_metric.get_plot_for_queries([10_000], n_instances=2)


def test_plots_need_paths():
    data = make_data(n=20, n_labels=4, seed=12)
    metric = filled_metric(data, cmc_top_k=(1,))
    metric.compute_metrics()
    assert not metric.ready_to_visualize()
    with pytest.raises(KeyError, match="extra_keys"):
        metric.get_plot_for_queries([0], n_instances=2)
    with pytest.raises(RuntimeError, match="compute_metrics"):
        EmbeddingMetrics(verbose=False).visualize()


def test_string_labels_give_the_same_metrics():
    data = make_data(n=40, n_labels=5, seed=13)
    as_ints = filled_metric(data, cmc_top_k=(1, 3)).compute_metrics()
    as_strings = filled_metric(dict(data, labels=[f"id-{int(v)}" for v in data["labels"]]), cmc_top_k=(1, 3))
    assert as_strings.compute_metrics() == as_ints
