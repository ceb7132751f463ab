"""The search-layer commands through click's CliRunner, on the indexed sample photos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import select

from indexer.schema import Image
from lookalike import cli_duplicates
from lookalike.cli import main
from search.duplicates.candidates import SIMILAR_THRESHOLD
from tests.conftest import SAMPLES


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(main, [str(a) for a in args])
        return result

    return invoke


def image_id(library, path):
    with library.Session() as s:
        return s.scalar(select(Image.id).where(Image.path == path))


def first_sample(cls):
    return min((SAMPLES / cls).glob("*.jpg"))


def test_search_by_id_prints_json_without_the_query(run, sample_library):
    query = image_id(sample_library, f"shoes/{first_sample('shoes').name}")
    result = run("search", query, "--library", sample_library.path, "-k", 5, "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 5
    assert {"id", "path", "score"} <= set(hits[0])
    assert query not in [h["id"] for h in hits]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert sum(h["path"].startswith("shoes/") for h in hits) >= 4  # shoes look like shoes


def test_search_by_library_path_and_by_outside_file_agree(run, sample_library, tmp_path):
    rel = f"hat/{first_sample('hat').name}"
    by_path = json.loads(
        run("search", rel, "--library", sample_library.path, "-k", 3, "--json").output
    )
    assert rel not in [h["path"] for h in by_path]
    outside = tmp_path / "query.png"
    img = PILImage.open(first_sample("hat"))
    img.resize((img.width * 3 // 4, img.height * 3 // 4)).save(outside)
    result = run("search", outside, "--library", sample_library.path, "-k", 3, "--json")
    assert result.exit_code == 0, result.output
    by_file = json.loads(result.output)
    assert by_file[0]["path"] == rel and by_file[0]["score"] > 0.95


def test_search_by_a_file_whose_name_is_not_utf8(run, sample_library, tmp_path):
    """Its name was looked up in the library first, and SQLite's text is UTF-8: a traceback."""
    import os

    query = os.fsdecode(bytes(tmp_path) + b"/\xe9t\xe9.jpg")  # a Latin-1 name
    shutil.copy(first_sample("hat"), query)
    result = run("search", query, "--library", sample_library.path, "-k", 1, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["path"] == f"hat/{first_sample('hat').name}"


def test_search_text_output_and_errors(run, sample_library, tmp_path):
    rel = f"hat/{first_sample('hat').name}"
    result = run("search", rel, "--library", sample_library.path, "-k", 2)
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 2
    result = run("search", "no/such/photo.jpg", "--library", sample_library.path)
    assert result.exit_code == 1 and "is not an image id" in result.output
    junk = tmp_path / "junk.jpg"
    junk.write_text("not a photo")
    result = run("search", junk, "--library", sample_library.path)
    assert result.exit_code == 1 and "not an image" in result.output
    result = run("search", "1", "--library", tmp_path / "missing")
    assert result.exit_code == 1 and "no library" in result.output


def test_labels_import_export_and_counts(run, sample_library, tmp_path):
    result = run("labels", "import", "--folders", "--library", sample_library.path)
    assert result.exit_code == 0 and "set 120 labels" in result.output
    counts = json.loads(run("labels", "counts", "--library", sample_library.path, "--json").output)
    assert len(counts) == 10 and set(counts.values()) == {12}
    out = tmp_path / "labels.csv"
    result = run("labels", "export", out, "--library", sample_library.path)
    assert result.exit_code == 0 and out.read_text().count("\n") == 121
    edited = out.read_text().replace(",dress,", ",frock,")
    out.write_text(edited)
    result = run("labels", "import", out, "--library", sample_library.path)
    assert result.exit_code == 0 and "set 12 labels" in result.output
    assert "frock" in json.loads(
        run("labels", "counts", "--library", sample_library.path, "--json").output
    )
    result = run("labels", "import", "--library", sample_library.path)
    assert result.exit_code == 2 and "CSV_FILE or --folders" in result.output


def test_eval_on_the_library_labels(run, labelled_samples):
    result = run("eval", "--library", labelled_samples.path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"top1", "top5", "precision_at_10", "k", "temperature", "images", "classes"} <= set(
        report
    )
    assert (report["images"], report["classes"], report["k"], report["temperature"]) == (
        120,
        10,
        20,
        0.07,
    )
    assert report["top1"] >= 0.65
    text = run("eval", "--library", labelled_samples.path, "-k", 5)
    assert text.exit_code == 0 and "top-1" in text.output and "k=5" in text.output


def test_eval_on_a_folder_indexes_it_in_one_command(run, tmp_path):
    photos = tmp_path / "photos"
    for cls in ("hat", "pants", "shoes"):
        (photos / "train" / cls).mkdir(parents=True)
        for src in sorted((SAMPLES / cls).glob("*.jpg"))[:4]:
            shutil.copy(src, photos / "train" / cls / src.name)
    result = run("eval", photos, "--json", "--workers", 0, "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["images"], report["classes"]) == (12, 3)
    assert report["top1"] >= 0.75  # hats, trousers and shoes are easy apart
    result = run("eval", photos, "--library", tmp_path / "lib")
    assert result.exit_code == 2


def test_eval_without_labels_is_a_clear_error(run, sample_library):
    result = run("eval", "--library", sample_library.path)
    assert result.exit_code == 1 and "label at least two" in result.output


def test_duplicates_json_and_text(run, sample_library):
    result = run("duplicates", "--library", sample_library.path, "--json", "--kind", "similar", "--threshold", 0.8)
    assert result.exit_code == 0, result.output
    # The 120 sample photos are different pictures, some of them alike (cosine above 0.8), none taken
    # moments apart: no similar shots either (the tier's JSON: tests/search/duplicates/test_review.py).
    assert json.loads(result.output) == []
    result = run("duplicates", "--library", sample_library.path)
    # The 120 sample photos are all different pictures: no copies among them.
    assert result.exit_code == 0 and result.output.startswith("0 groups of copies of the same photo")


def test_the_help_shows_the_real_default_threshold(run):
    assert cli_duplicates.DEFAULT_DUPLICATE_THRESHOLD == SIMILAR_THRESHOLD
    assert f"[{SIMILAR_THRESHOLD}]" in run("duplicates", "--help").output


def test_search_never_imports_upward():
    code = (
        "import sys, search.searcher, search.labelling.labels, search.labelling.labeller, "
        "search.labelling.evaluate, search.duplicates.candidates; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('web', 'lookalike', 'flask')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_does_not_import_faiss_or_torch():
    code = (
        "import sys; from click.testing import CliRunner; from lookalike.cli import main; "
        "CliRunner().invoke(main, ['search', '--help']); CliRunner().invoke(main, ['duplicates', '--help']); "
        "assert 'faiss' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
