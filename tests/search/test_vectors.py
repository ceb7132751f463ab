"""Index types: the choice by size and memory, approximate recall against exact, ids, persistence."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import delete

import indexer.vectors as vectors_module
from indexer.schema import Image
from indexer.vectors import FLAT, HNSW, IVF_PQ, IVF_SQ8, VectorIndex, plan_index, recall_at
from lookalike.cli import main
from search.searcher import Searcher

GiB = 1 << 30


def random_unit(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    """12k random unit vectors in 32-d under sparse, non-contiguous ids, and 200 held-out queries."""
    base = random_unit(12_000, 32, seed=1)
    ids = np.arange(12_000, dtype=np.int64) * 3 + 1000
    queries = random_unit(200, 32, seed=2)
    _, pos = faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)
    return base, ids, queries, ids[pos]


def test_the_plan_follows_size_and_memory_budget():
    assert plan_index(3_781, 1280).kind == FLAT
    assert plan_index(50_000, 1280).kind == FLAT
    assert plan_index(60_000, 1280) == vectors_module.IndexPlan(HNSW, hnsw_m=32)
    # 4 (d + 2M) bytes a vector: a budget that leaves room for M = 12 only.
    assert plan_index(200_000, 1280, memory_budget=200_000 * 4 * (1280 + 2 * 12 + 5)).hnsw_m == 12
    big = plan_index(1_000_000, 1280)
    assert big.kind == IVF_SQ8 and big.estimated_bytes(1_000_000, 1280) <= 4 * GiB
    tight = plan_index(1_000_000, 1280, memory_budget=GiB // 4)
    assert tight.kind == IVF_PQ and tight.estimated_bytes(1_000_000, 1280) <= GiB // 4
    assert 1280 % tight.pq_m == 0
    assert plan_index(5_000, 1280, memory_budget=1).kind == FLAT  # too few to train a quantiser
    with pytest.raises(ValueError):
        plan_index(10, 4, kind="lsh")


@pytest.mark.parametrize("kind", [HNSW, IVF_SQ8])
def test_approximate_indexes_reach_the_recall_target_against_exact(data, kind):
    base, ids, queries, exact = data
    index = VectorIndex.build(32, ids, base, kind=kind)
    assert index.kind == kind
    assert index.stats.recall_at_10 >= 0.95  # measured at build on indexed vectors
    _, found = index.search(queries, 10)
    assert set(np.unique(found)) <= set(ids)  # ids are the database ids, not positions
    assert recall_at(exact, found) >= 0.9  # held-out queries
    facts = index.describe()
    assert facts["index_type"] == kind and facts["index_size"] == 12_000
    assert 0.95 <= facts["index_recall_at_10"] <= 1.0
    assert facts["index_memory_bytes"] > 0
    assert np.array_equal(index.ids(), ids)  # sorted, whatever the order of adding


def test_product_quantisation_is_measured_honestly(data):
    base, ids, queries, exact = data
    index = VectorIndex.build(32, ids, base, kind=IVF_PQ)
    assert index.kind == IVF_PQ
    _, found = index.search(queries, 10)
    held_out = recall_at(exact, found)
    assert 0.2 < held_out < 1.0  # 8 bytes for 32 floats loses neighbours
    assert index.stats.recall_at_10 == pytest.approx(held_out, abs=0.15)
    assert index.memory_bytes() < VectorIndex.build(32, ids, base, kind=FLAT).memory_bytes() / 4


def test_saved_indexes_keep_type_and_search_parameters(data, tmp_path):
    base, ids, queries, _ = data
    for kind in (HNSW, IVF_SQ8):
        index = VectorIndex.build(32, ids, base, kind=kind)
        index.save(tmp_path / f"{kind}.faiss")
        loaded = VectorIndex.load(tmp_path / f"{kind}.faiss", 32)
        assert (loaded.kind, loaded.params()) == (kind, index.params())
        assert np.array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])


def test_ivf_removes_in_place_and_hnsw_falls_back_to_exact(data, monkeypatch):
    base, ids, _, _ = data
    gone = ids[:100]
    ivf = VectorIndex.build(32, ids, base, kind=IVF_SQ8)
    assert ivf.remove(gone) == 100
    assert not np.isin(ivf.search(base[:100], 5)[1], gone).any()
    monkeypatch.setattr(vectors_module, "FLAT_MAX_VECTORS", 1_000)
    hnsw = VectorIndex.build(32, ids, base)
    assert hnsw.kind == HNSW and not hnsw.supports_updates and not hnsw.should_rebuild()
    assert hnsw.remove(gone) == 100
    assert hnsw.kind == FLAT and hnsw.ntotal == 11_900
    assert np.array_equal(hnsw.ids(), ids[100:])
    assert hnsw.should_rebuild()  # written next time as a fresh HNSW graph
    _, top = hnsw.search(base[100:101], 1)
    assert top[0, 0] == ids[100]  # exact: each vector finds itself


def test_the_library_builds_records_and_reconciles_an_approximate_index(
    vector_library, monkeypatch
):
    monkeypatch.setattr(vectors_module, "FLAT_MAX_VECTORS", 1_000)
    library = vector_library(random_unit(11_000, 16, seed=3))
    meta = library.meta()
    assert meta["index_type"] == HNSW
    assert json.loads(meta["index_size"]) == 11_000
    assert 0.95 <= json.loads(meta["index_recall_at_10"]) <= 1.0
    assert json.loads(meta["index_memory_bytes"]) > 11_000 * 16 * 4
    result = CliRunner().invoke(main, ["status", "--library", str(library.path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["index_type"] == HNSW

    # A row deleted behind the index: the HNSW graph cannot delete, so it is rebuilt from the DB.
    with library.Session.begin() as s:
        s.execute(delete(Image).where(Image.id == 5))
    loaded = library.load_vectors()
    assert loaded.kind == HNSW and loaded.ntotal == 10_999 and 5 not in set(loaded.ids())

    # The pipeline's path: remove on the loaded graph (now flat), then save -> HNSW again.
    loaded.remove([6])
    assert loaded.kind == FLAT
    with library.Session.begin() as s:
        s.execute(delete(Image).where(Image.id == 6))
    written = library.save_vectors(loaded, clean=True)
    assert written.kind == HNSW and library.meta()["index_type"] == HNSW
    hits = Searcher(library).by_id(7, k=10)
    assert len(hits) == 10 and 7 not in [h.image_id for h in hits]


@pytest.mark.parametrize("kind", [FLAT, HNSW, IVF_SQ8, IVF_PQ])
def test_every_index_type_tells_its_own_vectors_from_others_under_the_same_ids(data, kind):
    """The check a library makes on opening its FAISS file (issue 22, item 5)."""
    base, ids, _, _ = data
    index = VectorIndex.build(32, ids, base, kind=kind)
    sample = np.random.default_rng(3).choice(len(ids), 32, replace=False)
    assert index.holds(ids[sample], base[sample])
    assert not index.holds(ids[sample], base[(sample + 1) % len(ids)])  # another id's vector each
    assert index.holds(ids[:0], base[:0])  # nothing to compare: nothing to fault



def bursts(n, d, seed):
    """n unit vectors in bursts of 40 near-identical ones (a burst of photos of one scene)."""
    centres = random_unit(n // 40, d, seed=seed)
    noise = 0.05 * np.random.default_rng(seed + 1).standard_normal((n, d)).astype(np.float32)
    x = centres[np.arange(n) % len(centres)] + noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_an_ivf_search_returns_k_neighbours_where_the_probed_cells_hold_fewer(vector_library):
    """Bursts of near-identical photos: the tuned nprobe reaches few vectors for some photos, whose
    cells are small; a search for k of 12,000 photos must still return k of them, not what those
    cells happen to hold."""
    library = vector_library(bursts(12_000, 16, seed=4))
    budget = 400_000  # bytes: too few for a flat index of these vectors, enough for 8-bit codes
    library.save_vectors(library.build_vectors(budget), clean=True, memory_budget=budget)
    searcher = Searcher(library)
    assert searcher.index.kind == IVF_SQ8
    ids, vectors = library.stored_vectors()
    _, found = searcher.index.search(vectors, 50)
    assert (found >= 0).all()
    for image_id in (1, 2, 3, 500, 11_999):
        hits = searcher.by_id(image_id, k=50)
        assert len(hits) == 50 and image_id not in [h.image_id for h in hits]


def test_an_hnsw_search_returns_k_neighbours_beyond_its_efsearch(vector_library, monkeypatch):
    """The tuned efSearch (16 here) bounds the candidates an HNSW search keeps: in bursts of
    near-identical photos a search for the web's largest k (200) found about 70 of 12,000."""
    monkeypatch.setattr(vectors_module, "FLAT_MAX_VECTORS", 1_000)
    library = vector_library(bursts(12_000, 16, seed=4))
    searcher = Searcher(library)
    assert searcher.index.kind == HNSW
    ids, vectors = library.stored_vectors()
    _, found = searcher.index.search(vectors[::10], 200)
    assert (found >= 0).all()
    for image_id in (1, 2, 3, 500, 11_999):
        hits = searcher.by_id(image_id, k=200)
        assert len(hits) == 200 and image_id not in [h.image_id for h in hits]
