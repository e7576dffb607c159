"""SearchIndex keeps the exact search's gallery operand (PreparedGallery) across save / load."""

from pathlib import Path

import pytest
import torch

from oml.functional.knn import SCREENING_ENV, PreparedGallery, exact_knn
from oml.retrieval.index import SearchIndex
from oml.utils.io import FileFormatError


def data(n: int = 300, dim: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    galleries = 5 + torch.randn(n, dim, generator=g)  # off the origin: the centring matters
    galleries[n // 2 :: 9] = galleries[0]  # duplicates: ties
    return galleries, torch.cat([5 + torch.randn(40, dim, generator=g), galleries[:5]])


@pytest.mark.parametrize("screening", ["off", "on"])
def test_first_search_after_load_reuses_the_saved_operand(
    screening: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared_gallery_builds: list
) -> None:
    monkeypatch.setenv(SCREENING_ENV, screening)  # "on": a bfloat16 operand (emulated on CPUs without bf16)
    galleries, queries = data()
    index = SearchIndex(galleries, ids=[f"i{i}" for i in range(len(galleries))])
    before = index.search(queries, 9)
    built_by_first = len(prepared_gallery_builds)
    index.search(queries, 9)
    # a warm index builds nothing (a screened search may still build a float32 operand inside exact_knn for the
    # queries that screening could not certify: duplicates here)
    built_by_warm = len(prepared_gallery_builds) - built_by_first
    assert built_by_first >= 1 and built_by_warm <= (0 if screening == "off" else built_by_first - 1)
    index.save(tmp_path / "index.pt")
    saved = torch.load(tmp_path / "index.pt", weights_only=True)["prepared"]
    assert saved["gallery_aug"].dtype == (torch.bfloat16 if screening == "on" else torch.float32)

    n_builds = len(prepared_gallery_builds)
    loaded = SearchIndex.load(tmp_path / "index.pt")
    after = loaded.search(queries, 9)
    assert len(prepared_gallery_builds) - n_builds == built_by_warm  # the first search after load is a warm one
    assert torch.equal(after.indices, before.indices) and torch.equal(after.distances, before.distances)
    fresh = PreparedGallery(galleries, torch.bfloat16 if screening == "on" else None)
    for name in ("center", "gallery_aug", "sq_norms"):  # the stored operand is the one a search builds
        assert torch.equal(saved[name], getattr(fresh, name)), name
    reference = exact_knn(queries, galleries, 9, screening="off")
    assert torch.equal(after.indices, reference.indices) and torch.equal(after.distances, reference.distances)

    n_builds = len(prepared_gallery_builds)
    loaded.embeddings[7] += 1  # edited in place after loading: the saved operand no longer fits
    edited = loaded.search(queries, 9)
    assert len(prepared_gallery_builds) > n_builds
    expected = exact_knn(queries, loaded.embeddings, 9, screening="off")
    assert torch.equal(edited.indices, expected.indices) and torch.equal(edited.distances, expected.distances)


def test_save_without_operand_and_a_search_of_another_dtype(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared_gallery_builds: list
) -> None:
    galleries, queries = data(seed=1)
    index = SearchIndex(galleries)
    index.save(tmp_path / "never_searched.pt")  # built at save: the float32 operand of a search of a few queries
    assert len(prepared_gallery_builds) == 1
    SearchIndex.load(tmp_path / "never_searched.pt").search(queries, 4)
    assert len(prepared_gallery_builds) == 1

    index.save(tmp_path / "small.pt", prepared=False)
    assert torch.load(tmp_path / "small.pt", weights_only=True)["prepared"] is None
    SearchIndex.load(tmp_path / "small.pt").search(queries, 4)
    assert len(prepared_gallery_builds) == 2  # built by the first search

    monkeypatch.setenv(SCREENING_ENV, "on")  # the saved float32 operand is not the one a screened search needs
    loaded = SearchIndex.load(tmp_path / "never_searched.pt")
    screened = loaded.search(queries, 4)
    assert len(prepared_gallery_builds) >= 3 and loaded.backend.prepared.tile_dtype == torch.bfloat16
    assert torch.equal(screened.indices, index.search(queries, 4).indices)

    faiss_index = SearchIndex(galleries, backend="faiss_flat")
    faiss_index.save(tmp_path / "faiss.pt")
    assert torch.load(tmp_path / "faiss.pt", weights_only=True)["prepared"] is None  # Faiss does not use it


def test_an_inconsistent_operand_is_refused(tmp_path: Path) -> None:
    galleries, _ = data()
    index = SearchIndex(galleries)
    content = index.content()
    content["prepared"]["gallery_aug"] = content["prepared"]["gallery_aug"][:-1]
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(FileFormatError, match=r"bad.pt holds a prepared gallery operand of shapes .*inconsistent"):
        SearchIndex.load(tmp_path / "bad.pt")
    del content["prepared"]  # files written before the operand was stored still load
    torch.save(content, tmp_path / "old.pt")
    assert len(SearchIndex.load(tmp_path / "old.pt")) == len(galleries)


def test_a_search_decides_the_screening_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operand is chosen (prepared_gallery_for) with the screening decision; exact_knn takes it from there."""
    import oml.functional.knn as knn

    decisions = []

    def counted(*args, **kwargs):
        decisions.append(args[0].shape)
        return screening_dtype(*args, **kwargs)

    screening_dtype = knn.screening_dtype
    monkeypatch.setattr(knn, "screening_dtype", counted)
    galleries, queries = data()
    index = SearchIndex(galleries)
    decisions.clear()
    found = index.search(queries, 9)
    assert len(decisions) == 1
    expected = exact_knn(queries, galleries, 9)
    assert torch.equal(found.indices, expected.indices) and torch.equal(found.distances, expected.distances)
