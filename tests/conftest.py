"""Fixtures shared by every test: real photos, the real offline backbone, real libraries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from indexer.backbone import Backbone
from indexer.library import Library
from indexer.pipeline import index_folder

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "lookalike" / "samples"  # 120 CC0 photos, 12 per class, class-per-folder
TEST_DATA = Path(__file__).parent / "data"
SHARED = REPO.parent / "shared" / "corpora"  # ../shared/corpora beside the checkout


def shared_corpus(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} is not here (CI clones with ../shared beside the repo)")
    return path


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory) -> Path:
    """Converted models (indexer/engines.py) go to a folder of this session, not the user's cache;
    subprocesses inherit it."""
    path = tmp_path_factory.mktemp("engine-cache")
    old = os.environ.get("LOOKALIKE_CACHE")
    os.environ["LOOKALIKE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LOOKALIKE_CACHE", None)
    else:
        os.environ["LOOKALIKE_CACHE"] = old


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    """The default backbone with its real offline ImageNet weights, loaded once."""
    b = Backbone("efficientnet_lite0", device="cpu")
    assert b.model is not None  # load now
    return b


@pytest.fixture(scope="session")
def sample_photos() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def sample_library_dir(tmp_path_factory, backbone) -> Path:
    """The 120 sample photos indexed once per session. Copy it before changing it."""
    path = tmp_path_factory.mktemp("samples-library")
    library = Library(path, create=True)
    try:
        index_folder(SAMPLES, library, backbone, batch_size=32, workers=1)
    finally:
        library.close()
    return path


@pytest.fixture
def sample_library(sample_library_dir, tmp_path) -> Library:
    """A private, writable copy of the indexed sample library."""
    path = tmp_path / "library"
    shutil.copytree(sample_library_dir, path)
    library = Library(path)
    yield library
    library.close()


@pytest.fixture
def labelled_samples(sample_library) -> Library:
    """The indexed 120 sample photos, each labelled by its folder (10 classes of 12)."""
    from search.labelling.labels import import_folders

    assert import_folders(sample_library) == 120
    return sample_library


def labelled_library(tmp_path_factory, backbone, classes, per_class: int) -> Path:
    """A library of the first `per_class` sample photos of each class, indexed and labelled by folder."""
    from search.labelling.labels import import_folders

    root = tmp_path_factory.mktemp("photos")
    for c in classes:
        (root / c).mkdir()
        for f in sorted((SAMPLES / c).glob("*.jpg"))[:per_class]:
            shutil.copy(f, root / c / f.name)
    path = tmp_path_factory.mktemp("indexed") / "library"
    with Library(path, create=True) as library:
        index_folder(root, library, backbone, workers=0, engine="torch")
        import_folders(library)
    return path


def private_copy(indexed: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(library, photos): a copy of an indexed library and of its photos under tmp_path, the copy's
    photo root in its meta, for a test that writes labels or sidecars."""
    with Library(indexed) as original:
        root = original.root
    shutil.copytree(root, tmp_path / "photos")
    shutil.copytree(indexed, tmp_path / "library")
    with Library(tmp_path / "library") as lib, lib.Session.begin() as s:
        lib.set_meta(s, root=str(tmp_path / "photos"))
    return tmp_path / "library", tmp_path / "photos"


# -- leaving the test process ------------------------------------------------------------------------
# A full run ends with native threads still alive in this process: torch's and OpenBLAS's pools,
# OpenVINO's streams, the threads Ray leaves behind in a driver. Tearing the interpreter down under
# them crashed the process after every test had been reported (exit 139 on a 2-core AMX Xeon, once
# in a full run here; stop 15's CI died the same way). Once pytest has written its summary there is
# nothing left to do, so the process leaves with pytest's own exit status without that teardown.
_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _exit_status and not hasattr(config, "workerinput"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
