"""Labels as XMP keywords, on a real indexed library and real sidecars: exported into sidecars that
exiv2 (as digiKam and darktable would) reads back; merged into existing sidecars without losing a
field; a label changed twice; imported back from sidecars and embedded XMP; bad sidecars skipped."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import exiv2
import pytest
from sqlalchemy import delete, select

from indexer.exiv2io import XmpPacket
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image, Label
from search.labelling.labels import set_label
from search.labelling.xmp_labels import export_xmp, import_xmp
from search.labelling.xmp_sidecar import DARKTABLE, KEYWORD_KEYS, LIGHTROOM, merge_label, sidecar_path
from tests.conftest import labelled_library, private_copy

# A sidecar as darktable writes it, with a title, a creator, a rating, an edit history and the
# user's own keywords: every one of these must survive.
DARKTABLE_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
   xmp:Rating="4"
   xmpMM:DerivedFrom="IMG_0001.CR2"
   darktable:import_timestamp="63842198400000000"
   darktable:xmp_version="5"
   darktable:history_end="2">
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Beach walk — été</rdf:li></rdf:Alt></dc:title>
   <dc:creator><rdf:Seq><rdf:li>Ana Photographer</rdf:li></rdf:Seq></dc:creator>
   <dc:subject><rdf:Bag><rdf:li>beach</rdf:li><rdf:li>shoes</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>places|beach</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1"
      darktable:params="0000000000000000cdcc4c3e"/>
     <rdf:li darktable:num="1" darktable:operation="colorbalancergb" darktable:enabled="1"
      darktable:params="gz48eJxjYGBgYAFiCQYYYHJgQAMAEUkAiQ=="/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, backbone):
    """Six photos of two folders, indexed and labelled by folder (hat, shoes)."""
    return labelled_library(tmp_path_factory, backbone, ["hat", "shoes"], 3)


@pytest.fixture
def library(indexed, tmp_path):
    """A private copy of the library and its photos, the copy's photo root in its meta."""
    lib = Library(private_copy(indexed, tmp_path)[0])
    yield lib
    lib.close()


def labels_of(library) -> dict[str, str]:
    with library.Session() as s:
        return dict(s.execute(select(Image.path, Label.label).join(Label)).all())


def set_labels(library, by_path: dict[str, str | None]) -> None:
    with library.Session.begin() as s:
        ids = dict(s.execute(select(Image.path, Image.id)).all())
        for path, label in by_path.items():
            if label is None:
                s.execute(delete(Label).where(Label.image_id == ids[path]))
            else:
                set_label(s, ids[path], label)


def read_back(path) -> dict[str, list[str]]:
    """A sidecar's keywords as another program reads them: exiv2 on the file, nothing of lookalike's."""
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    xmp = image.xmpData()
    out = {}
    for key in ("Xmp.dc.subject", "Xmp.lr.hierarchicalSubject"):
        out[key] = [xmp[key].toString(i) for i in range(xmp[key].count())] if key in xmp else []
    return out


def others(path) -> dict[str, str]:
    """Every property of a sidecar but the keyword lists, as exiv2 reads them."""
    snap = XmpPacket(path.read_bytes()).snapshot()
    return {k: v for k, v in snap.items() if not k.startswith(KEYWORD_KEYS)}


def photo_fingerprints(root) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in root.rglob("*") if p.suffix == ".jpg"
    }


def test_export_writes_both_keyword_lists_that_exiv2_reads_back(library):
    root = library.root
    before = photo_fingerprints(root)
    report = export_xmp(library, root)
    assert (report.written, report.unchanged, report.problems) == (6, 0, [])
    for path, label in labels_of(library).items():
        sidecar = root / f"{path}.xmp"  # darktable's and digiKam's name
        assert read_back(sidecar) == {"Xmp.dc.subject": [label], "Xmp.lr.hierarchicalSubject": [f"lookalike|{label}"]}
    assert photo_fingerprints(root) == before  # the photos are never touched
    assert sorted(p.name for p in root.rglob("*.xmp")) == sorted(f"{p.split('/')[-1]}.xmp" for p in labels_of(library))


def test_labels_round_trip_through_sidecars(library):
    root = library.root
    want = labels_of(library)
    set_labels(library, {next(iter(want)): "odd one | out"})  # a label with the hierarchy's separator
    want = labels_of(library)
    export_xmp(library, root, parent="my photos")
    with library.Session.begin() as s:
        s.execute(delete(Label))
    report = import_xmp(library, root, parent="my photos")
    assert (report.found, report.set, report.problems, report.ambiguous) == (6, 6, [], [])
    assert labels_of(library) == want
    # A second export of the same labels finds every sidecar up to date and rewrites none.
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.xmp")}
    report = export_xmp(library, root, parent="my photos")
    assert (report.written, report.unchanged) == (0, 6)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.xmp")} == stamps


def test_an_existing_sidecar_keeps_every_other_field(library):
    root = library.root
    path, label = sorted(labels_of(library).items())[0]
    sidecar = root / f"{path}.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    kept = others(sidecar)
    assert "Xmp.darktable.history[2]/darktable:params" in kept and "Xmp.dc.title" in kept
    export_xmp(library, root)
    assert others(sidecar) == kept
    assert read_back(sidecar) == {
        "Xmp.dc.subject": ["beach", "shoes", label],
        "Xmp.lr.hierarchicalSubject": ["places|beach", f"lookalike|{label}"],
    }
    text = sidecar.read_text(encoding="utf-8")
    assert "Beach walk — été" in text and 'darktable:params="gz48eJxjYGBgYAFiCQYYYHJgQAMAEUkAiQ=="' in text


def test_a_label_changed_twice_replaces_only_lookalike_s_keyword(library):
    root = library.root
    path = sorted(p for p, label in labels_of(library).items() if label == "hat")[0]
    sidecar = root / f"{path}.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR, encoding="utf-8")  # the user's own keywords: beach, shoes
    kept = others(sidecar)
    export_xmp(library, root)
    assert read_back(sidecar)["Xmp.dc.subject"] == ["beach", "shoes", "hat"]
    set_labels(library, {path: "shoes"})  # the word the user had typed in already
    export_xmp(library, root)
    assert read_back(sidecar) == {"Xmp.dc.subject": ["beach", "shoes"],
                                  "Xmp.lr.hierarchicalSubject": ["places|beach", "lookalike|shoes"]}
    set_labels(library, {path: "sandals"})  # lookalike never added "shoes": the user's keyword stays
    export_xmp(library, root)
    assert read_back(sidecar) == {"Xmp.dc.subject": ["beach", "shoes", "sandals"],
                                  "Xmp.lr.hierarchicalSubject": ["places|beach", "lookalike|sandals"]}
    set_labels(library, {path: None})  # label cleared: lookalike's keyword goes, the user's stay
    export_xmp(library, root)
    assert read_back(sidecar) == {"Xmp.dc.subject": ["beach", "shoes"], "Xmp.lr.hierarchicalSubject": ["places|beach"]}
    assert others(sidecar) == kept


def test_lightroom_naming_and_import_of_every_keyword(library):
    root = library.root
    want = labels_of(library)
    report = export_xmp(library, root, naming=LIGHTROOM)
    assert report.written == 6 and not list(root.rglob("*.jpg.xmp"))
    for path in want:
        assert (root / path).with_suffix(".xmp").is_file()
    with library.Session.begin() as s:
        s.execute(delete(Label))
    assert import_xmp(library, root, parent=None).set == 6  # dc:subject and the hierarchy's leaf agree
    assert labels_of(library) == want


def test_import_reads_embedded_xmp_and_reports_several_labels(library):
    root = library.root
    first, second = sorted(labels_of(library))[:2]
    for path, keywords in ((first, ["lookalike|boots"]), (second, ["lookalike|boots", "lookalike|clogs"])):
        packet = XmpPacket()
        packet.set_bag("Xmp.lr.hierarchicalSubject", keywords)
        image = exiv2.ImageFactory.open(str(root / path))  # embedded in the JPEG, as Lightroom can
        image.readMetadata()
        image.setXmpPacket(packet.encode().decode("utf-8"))
        image.writeMetadata()
    report = import_xmp(library, root, overwrite=True)
    assert labels_of(library)[first] == "boots"
    assert report.ambiguous == [f"{root / second}: boots, clogs"]
    assert (report.found, report.set) == (1, 1)


def test_a_malformed_sidecar_is_reported_and_never_overwritten(library):
    root = library.root
    bad_path, good = sorted(labels_of(library))[:2]
    bad = root / f"{bad_path}.xmp"
    broken = DARKTABLE_SIDECAR[: len(DARKTABLE_SIDECAR) // 2].encode()
    bad.write_bytes(broken)
    report = export_xmp(library, root)
    assert report.written == 5 and len(report.problems) == 1
    assert report.problems[0].startswith(f"{bad}: malformed XMP")
    assert bad.read_bytes() == broken
    assert read_back(root / f"{good}.xmp")["Xmp.dc.subject"] == [labels_of(library)[good]]
    report = import_xmp(library, root)
    assert report.problems == [next(p for p in report.problems if p.startswith(f"{bad}: malformed XMP"))]
    assert report.found == 5


def test_a_read_only_folder_is_an_error_per_photo_and_the_rest_go_on(library, read_only):
    root = library.root
    with read_only(root / "hat"):
        report = export_xmp(library, root)
    hats = sorted(p for p, label in labels_of(library).items() if label == "hat")
    assert report.written == 3
    why = "Read-only file system" if ROOT else "Permission denied"
    assert sorted(report.problems) == [f"{root / p}.xmp: cannot write in {root / 'hat'}: {why}" for p in hats]
    assert not list((root / "hat").glob("*.xmp")) and len(list((root / "shoes").glob("*.xmp"))) == 3


def test_a_photo_with_a_long_name_gets_its_sidecar(library, backbone):
    root = library.root
    path, label = sorted(labels_of(library).items())[0]
    long = f"{path.split('/')[0]}/{'é' * 118}.jpg"  # 240 bytes: its sidecar's name takes 244 of the 255 allowed
    (root / path).rename(root / long)
    index_folder(root, library, backbone, workers=0, engine="torch")  # a move: the row keeps its label
    assert labels_of(library)[long] == label
    report = export_xmp(library, root)
    assert report.problems == []
    assert read_back(root / f"{long}.xmp")["Xmp.dc.subject"] == [label]
    assert not [p for p in root.rglob(".*")]  # no temporary file left behind


def test_merge_records_only_what_it_added():
    packet = XmpPacket()
    packet.set_bag("Xmp.dc.subject", ["hat"])
    assert merge_label(packet, "hat", "lookalike")  # the hierarchical keyword is added, the flat one was there
    assert packet.values("Xmp.lookalike.subject") == [] and packet.values("Xmp.lookalike.hierarchicalSubject") == [
        "lookalike|hat"]
    assert not merge_label(packet, "hat", "lookalike")


def test_sidecar_names():
    assert sidecar_path(Path("a/IMG_1.CR2"), DARKTABLE) == Path("a/IMG_1.CR2.xmp")
    assert sidecar_path(Path("a/IMG_1.CR2"), LIGHTROOM) == Path("a/IMG_1.xmp")


ROOT = os.geteuid() == 0


@pytest.fixture
def read_only():
    """A context that makes a folder read-only for real: a read-only bind mount for root (whom
    chmod does not stop), chmod 555 for anyone else."""
    @contextlib.contextmanager
    def make(folder):
        if not ROOT:
            folder.chmod(0o555)
            try:
                yield
            finally:
                folder.chmod(0o755)
            return
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"root, and no read-only bind mount here: {mounted.stderr.decode().strip()}")
        try:
            assert not os.access(folder, os.W_OK) or _refuses(folder)
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True)

    return make


def _refuses(folder) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return True
    (folder / ".probe").unlink()
    return False

