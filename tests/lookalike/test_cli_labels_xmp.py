"""`lookalike labels export --xmp` and `labels import --xmp` from the command line: the summary
line, the options, a malformed sidecar named on stderr with a failing exit status."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select

from indexer.exiv2io import XmpPacket
from indexer.library import Library
from indexer.schema import Image, Label
from lookalike.cli import main
from lookalike.cli_labels import XMP_PARENT
from search.labelling.xmp_sidecar import DEFAULT_PARENT
from tests.conftest import labelled_library, private_copy


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, backbone):
    return labelled_library(tmp_path_factory, backbone, ["hat", "shoes"], 2)


@pytest.fixture
def library(indexed, tmp_path):
    return private_copy(indexed, tmp_path)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def labels_of(path) -> dict[str, str]:
    with Library(path) as lib, lib.Session() as s:
        return dict(s.execute(select(Image.path, Label.label).join(Label)).all())


def test_export_and_import_xmp_round_trip(library):
    lib, photos = library
    want = labels_of(lib)
    result = run("labels", "export", "--xmp", "--sidecar", "lightroom", "--parent", "shop", "--library", lib)
    assert result.exit_code == 0, result.output
    assert result.output == "wrote 4 XMP sidecars (lightroom naming), 0 already up to date\n"
    assert sorted(p.name for p in photos.rglob("*.xmp")) == sorted(p.split("/")[-1][:-4] + ".xmp" for p in want)
    packet = XmpPacket((photos / next(iter(want))).with_suffix(".xmp").read_bytes())
    assert packet.values("Xmp.lr.hierarchicalSubject") == [f"shop|{want[next(iter(want))]}"]
    with Library(lib) as opened, opened.Session.begin() as s:
        s.execute(delete(Label))
    result = run("labels", "import", "--xmp", "--parent", "shop", "--library", lib)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("set 4 labels from XMP keywords under 'shop' (4 photos had one)\n")
    assert labels_of(lib) == want


def test_a_malformed_sidecar_is_named_on_stderr_and_fails_the_command(library):
    lib, photos = library
    first = sorted(labels_of(lib))[0]
    bad = photos / f"{first}.xmp"
    bad.write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF")
    result = run("labels", "export", "--xmp", "--library", lib)
    assert result.exit_code == 1
    assert f"skipped {bad}: malformed XMP" in result.output
    assert "wrote 3 XMP sidecars (darktable naming), 0 already up to date; 1 skipped" in result.output
    assert bad.read_bytes() == b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF"


@pytest.mark.parametrize("args, message", [
    (["labels", "export"], "give either CSV_FILE or --xmp"),
    (["labels", "export", "out.csv", "--xmp"], "give either CSV_FILE or --xmp"),
    (["labels", "import", "--xmp", "--folders"], "give either CSV_FILE or --folders (or --xmp)"),
    (["labels", "import", "--folders", "--all-keywords"], "--all-keywords goes with --xmp"),
    (["labels", "export", "--xmp", "--parent", "a|b"], "the keyword parent must be one non-empty level"),
    (["labels", "export", "--xmp", "--sidecar", "picasa"], "'picasa' is not one of 'darktable', 'lightroom'"),
])
def test_usage_errors(library, args, message):
    lib, _ = library
    result = run(*args, "--library", lib)
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_default_parent_is_named_once_for_the_command_line():
    assert XMP_PARENT == DEFAULT_PARENT

