import pytest
import torch

from oml.metrics.triplets import AccuracyOnTriplets


def test_streaming_average_overall_and_per_category():
    metric = AccuracyOnTriplets(categories_key="categories")
    metric.setup()
    # triplets: correct, wrong | correct
    metric.update_data(
        {"embeddings": torch.tensor([[0.0], [1.0], [3.0], [0.0], [2.0], [1.0]]), "categories": ["a", "b"]}
    )
    metric.update_data({"embeddings": torch.tensor([[0.0], [1.0], [3.0]]), "categories": ["b", "b", "b"]})
    result = metric.compute_metrics()
    assert result["OVERALL"]["accuracy_on_triplets"] == pytest.approx(2 / 3)
    assert result["a"]["accuracy_on_triplets"] == 1.0
    assert result["b"]["accuracy_on_triplets"] == 0.5
    metric.setup()
    with pytest.raises(ValueError, match="No triplets"):
        metric.compute_metrics()
    with pytest.raises(ValueError, match="one value per triplet"):
        metric.update_data({"embeddings": torch.zeros(6, 2), "categories": ["a"]})
    with pytest.raises(KeyError, match="embeddings"):
        metric.update_data({"x": torch.zeros(3, 2)})
