"""A damaged `vectors.faiss` is derived data: rebuilt from the database, never a faiss traceback.

Issue 22, item 5: a truncated, garbage or empty file made status, search, serve and index die with a
faiss RuntimeError, and index did not rebuild it; a file with the right ids but wrong vectors gave
wrong results without a word.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.vectors import VectorIndex
from lookalike.cli import main
from tests.conftest import SAMPLES
from web.app import create_app


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def garbage(data: bytes) -> bytes:
    return np.random.default_rng(0).bytes(len(data))


def empty(data: bytes) -> bytes:
    return b""


def wrong_header(data: bytes) -> bytes:  # a FAISS header whose fourcc names no index type
    return b"IxQQ" + data[4:]


def test_the_reason_given_is_faiss_s_own_without_its_cpp(tmp_path):
    from indexer.vectors import DamagedIndexError

    path = tmp_path / "vectors.faiss"
    VectorIndex.empty(4).save(path)
    path.write_bytes(wrong_header(path.read_bytes()))
    with pytest.raises(DamagedIndexError) as e:
        VectorIndex.load(path, 4)
    assert str(e.value) == 'faiss cannot read it: Index type 0x51517849 ("IxQQ") not recognized'


def assert_vectors_match_the_database(library) -> None:
    ids, stored = library.stored_vectors()
    index = VectorIndex.load(library.vectors_path, library.dim)
    assert np.array_equal(np.sort(index.ids()), ids)
    assert np.array_equal(np.stack([index.index.reconstruct(int(i)) for i in ids]), stored)


def top_hit(library, image_id: int) -> list[int]:
    result = CliRunner().invoke(main, ["search", str(image_id), "--library", str(library.path), "-k", "3",
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return [h["id"] for h in json.loads(result.output)]


@pytest.mark.parametrize("damage", [truncated, garbage, empty, wrong_header])
def test_a_damaged_file_is_rebuilt_by_status_search_serve_and_index(sample_library, damage, caplog, monkeypatch):
    library = sample_library
    ids, _ = library.stored_vectors()
    before = top_hit(library, int(ids[0]))
    path = library.vectors_path
    path.write_bytes(damage(path.read_bytes()))
    runner = CliRunner()

    with caplog.at_level(logging.WARNING, logger="indexer.library"):
        status = runner.invoke(main, ["status", "--library", str(library.path), "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["vectors"] == len(ids) == 120
    assert f"{path} is damaged" in caplog.text and "rebuilding it from the database" in caplog.text
    assert "index_read.cpp" not in caplog.text and "std::" not in caplog.text  # faiss's reason, not its C++

    assert top_hit(library, int(ids[0])) == before

    monkeypatch.setenv("LOOKALIKE_LIBRARY", str(library.path))
    client = create_app().test_client()  # what `serve` runs
    assert client.get("/api/status").get_json()["indexed"] == 120
    neighbours = client.get(f"/api/images/{int(ids[0])}/neighbours?k=3")
    assert neighbours.status_code == 200, neighbours.get_data(as_text=True)

    result = runner.invoke(main, ["index", str(SAMPLES), "--library", str(library.path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "indexed 0, unchanged 120" in result.output
    assert_vectors_match_the_database(library)  # written again, whole


def test_a_file_with_the_right_ids_but_wrong_vectors_is_caught_on_open_and_rebuilt(sample_library, caplog):
    library = sample_library
    ids, stored = library.stored_vectors()
    before = top_hit(library, int(ids[0]))
    # Every id present, every vector another photo's: the ids alone cannot tell.
    shuffled = VectorIndex.empty(library.dim)
    shuffled.add(ids, np.roll(stored, 1, axis=0))
    shuffled.save(library.vectors_path)
    with caplog.at_level(logging.WARNING, logger="indexer.library"):
        loaded = library.load_vectors()
    assert "vectors that differ from the database" in caplog.text
    assert np.array_equal(np.stack([loaded.index.reconstruct(int(i)) for i in ids]), stored)
    assert top_hit(library, int(ids[0])) == before

    result = CliRunner().invoke(main, ["index", str(SAMPLES), "--library", str(library.path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert_vectors_match_the_database(library)
