"""`lookalike tune`, `tune --revert` and the representation in `status`, through click's runner on a
real library of sample photos with the real backbone."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexer.cancel import Cancelled
from indexer.finetune import save_weights
from indexer.library import Library
from indexer.reembed import reembed
from lookalike.cli import main
from tests.conftest import labelled_library
from tests.web.library_setup import make_app

CLASSES = ("dress", "hat", "shoes")
PER_CLASS = 6
ENV = {"LOOKALIKE_ENGINE": "torch", "LOOKALIKE_WORKERS": "0", "LOOKALIKE_DEVICE": "cpu", "LOOKALIKE_BATCH_SIZE": "6"}
REEMBED = dict(engine="torch", workers=0, batch_size=6, device="cpu")  # as ENV says to the command


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, backbone):
    return labelled_library(tmp_path_factory, backbone, CLASSES, PER_CLASS)


@pytest.fixture
def library(indexed, tmp_path):
    path = tmp_path / "library"
    shutil.copytree(indexed, path)
    return path


def run(*args):
    return CliRunner(env=ENV).invoke(main, list(args))


def test_a_tune_that_cannot_win_prints_both_figures_and_keeps_nothing(library):
    result = run("tune", "--library", str(library), "--epochs", "0", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert {"kept", "frozen_accuracy", "tuned_accuracy", "representation", "reembedded"} <= set(out)
    assert out["kept"] is False and out["tuned_accuracy"] == out["frozen_accuracy"] and out["reembedded"] == 0
    status = json.loads(run("status", "--library", str(library), "--json").output)
    assert status["representation"]["id"] == out["representation"] and status["representation"]["parent"] is None


def test_too_few_labels_and_nothing_to_revert_are_one_line_errors(library):
    with Library(library) as lib:
        with lib.Session.begin() as s:
            from sqlalchemy import text

            s.execute(text("DELETE FROM labels WHERE image_id % 3 != 0"))
    result = run("tune", "--library", str(library))
    assert result.exit_code == 1 and result.output.startswith("Error: too few labels to tune")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = run("tune", "--library", str(library), "--revert")
    assert result.exit_code == 1 and "nothing to revert" in result.output
    assert len(result.output.strip().splitlines()) == 1


def add_tuned(lib: Library, backbone, **recorded):
    """A second representation, as `tune` records one (the backbone's weights, nudged), and its weights."""
    first = lib.current_representation()
    state = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
    w = state["conv_head.weight"]
    state["conv_head.weight"] = w + 0.2 * w.std() * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    saved = save_weights(lib, state)
    rep = lib.add_representation(backbone=first.backbone, weights_file=saved.path, weights=saved.identity,
                                 weights_sha256=saved.sha256, parent_id=first.id, **recorded)
    return rep, saved


def stop_after_a_batch(lib: Library, rep_id: int, **options) -> None:
    """A re-embedding into `rep_id` stopped after its first batch, as a Ctrl+C leaves it: staged, not current."""
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        reembed(lib, rep_id, progress=lambda done, total: cancel.set() if done else None, cancel=cancel,
                **REEMBED, **options)


def test_status_shows_a_tuned_representation_and_revert_returns_to_its_parent(library, backbone):
    with Library(library) as lib:
        first = lib.current_representation()
        _, before = lib.stored_vectors()
        rep, saved = add_tuned(lib, backbone, metrics={"frozen_accuracy": 0.8, "tuned_accuracy": 0.9})
        reembed(lib, rep.id, **REEMBED)

    status = run("status", "--library", str(library), "--json")
    facts = json.loads(status.output)
    assert facts["representation"] == {"id": rep.id, "parent": first.id, "weights": saved.identity, "tuned": True,
                                       "frozen_accuracy": 0.8, "tuned_accuracy": 0.9}
    assert facts["weights"] == saved.identity  # the existing keys are still there
    text_status = run("status", "--library", str(library)).output
    assert f"representation: {rep.id} (tuned from {first.id}, held-out accuracy 0.800 -> 0.900)" in text_status
    learned = run("learn", "--library", str(library))
    assert (f"representation: {rep.id}, tuned on your labels from {first.id}; held-out accuracy 0.800 before, "
            "0.900 after") in learned.output
    assert json.loads(run("learn", "--library", str(library), "--json").output)["representation"] == \
        facts["representation"]
    with Library(library) as lib:  # the About page says the same
        about = make_app(lib, backbone).test_client().get("/about").get_data(as_text=True)
    assert f"Representation {rep.id}: <b>tuned on your labels</b> (from representation {first.id})" in about
    assert "it measured 80% before and <b>90%</b> after" in about
    assert 'id="tune-revert"' in about

    result = run("tune", "--library", str(library), "--revert", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out == {"reverted": True, "representation": first.id, "reembedded": PER_CLASS * len(CLASSES)}
    with Library(library) as lib:
        assert lib.current_representation().id == first.id
        _, after = lib.stored_vectors()
    assert (after * before).sum(axis=1).min() > 0.9999
    assert np.allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-4)


def test_ctrl_c_while_training_is_one_line_and_leaves_the_library_as_it_was(library, monkeypatch):
    from lookalike import cli_tune

    real_update = cli_tune._Bar.update

    def ctrl_c_in_training(self, phase, done, total):  # the key pressed while the real training runs
        real_update(self, phase, done, total)
        if phase == "train":
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_tune._Bar, "update", ctrl_c_in_training)
    with Library(library) as lib:
        reps_before = [r.id for r in lib.representations()]
        fingerprint = lib.vectors_fingerprint()
    result = CliRunner(env=ENV).invoke(main, ["tune", "--library", str(library), "--epochs", "1"])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == "interrupted: the library is as it was"
    assert "Traceback" not in result.output
    with Library(library) as lib:
        assert [r.id for r in lib.representations()] == reps_before and lib.vectors_fingerprint() == fingerprint
        assert not list(lib.representations_dir.glob("*.pth"))


MEASURED = {"frozen_accuracy": 0.75, "tuned_accuracy": 0.875, "gain": 0.125, "n_train": 18, "n_heldout": 16,
            "p_value": 0.012, "stages": 2, "epochs": 3}  # what `tune` records with a representation it keeps


def test_a_resumed_tune_is_the_last_tune_and_a_resumed_revert_is_not(library, backbone):
    """A tune that was kept and interrupted in its re-embedding is finished by the next `tune`: that
    tune's figures become the last tune (LAST_TUNE_STATE, which the About page shows), with the labels
    it was trained on. A --revert finished the same way is no tune: the last tune stays."""
    from search.labelling.labels import labels_fingerprint
    from search.tuning import LAST_TUNE_STATE

    with Library(library) as lib:
        trained_on = labels_fingerprint(lib)
        rep, _ = add_tuned(lib, backbone, metrics=MEASURED, labels={"fingerprint": trained_on, "photos": 18})
        stop_after_a_batch(lib, rep.id)
        with lib.Session.begin() as s:  # labels set since that tune: not what it was trained on
            from sqlalchemy import text

            s.execute(text("DELETE FROM labels WHERE image_id % 3 = 0"))
        assert not lib.state(LAST_TUNE_STATE)
    result = run("tune", "--library", str(library), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["resumed"] is True and out["representation"] == rep.id and out["kept"] is True
    with Library(library) as lib:
        last = lib.state(LAST_TUNE_STATE)
        assert last, "the resumed tune was not recorded"
        assert {k: last[k] for k in ("kept", "resumed", "representation", "frozen_accuracy", "tuned_accuracy",
                                     "n_heldout", "p_value", "epochs")} == {
            "kept": True, "resumed": True, "representation": rep.id, "frozen_accuracy": 0.75,
            "tuned_accuracy": 0.875, "n_heldout": 16, "p_value": 0.012, "epochs": 3}
        assert last["labelled"] == int(trained_on[0]) == PER_CLASS * len(CLASSES)
        about = make_app(lib, backbone).test_client().get("/about").get_data(as_text=True)
        assert "The last tune measured 75% → 87.5% on 16 held-out labels (+12.5 points) and was kept" in about

        stop_after_a_batch(lib, rep.parent_id)  # a --revert, interrupted
    result = run("tune", "--library", str(library), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["resumed"] is True
    with Library(library) as lib:
        assert lib.current_representation().id == rep.parent_id
        assert lib.state(LAST_TUNE_STATE) == last


def test_ctrl_c_after_the_switch_says_the_new_representation_is_current(library, backbone, monkeypatch):
    """Ctrl+C once the re-embedding has been switched in (while the lists and head refresh): the new
    representation is current, so "the library is as it was" would be false; the line says what is
    true, and the next `tune` finishes the refresh without training."""
    from lookalike import cli_tune
    from search.tuning import pending_representation

    with Library(library) as lib:
        first = lib.current_representation()
        rep, _ = add_tuned(lib, backbone, metrics=MEASURED)
        stop_after_a_batch(lib, rep.id)
    real_update = cli_tune._Bar.update

    def ctrl_c_in_refresh(self, phase, done, total):
        real_update(self, phase, done, total)
        if phase == "refresh":
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_tune._Bar, "update", ctrl_c_in_refresh)
    result = CliRunner(env=ENV).invoke(main, ["tune", "--library", str(library)])
    assert result.exit_code == 130 and "Traceback" not in result.output
    said = result.output.strip().splitlines()[-1]
    assert "as it was" not in said
    assert said == (f"interrupted after the switch: representation {rep.id} is current and search uses its "
                    "vectors; the neighbour lists, learned head and labelling queue were not refreshed for them "
                    "yet: `lookalike tune` refreshes them, without training again")
    with Library(library) as lib:
        assert lib.current_representation().id == rep.id != first.id
        assert pending_representation(lib).id == rep.id
    monkeypatch.undo()
    result = run("tune", "--library", str(library), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["resumed"] is True and out["representation"] == rep.id and out["reembedded"] == 0
    with Library(library) as lib:
        assert pending_representation(lib) is None


def test_a_tune_from_a_representation_whose_weights_file_is_gone_is_one_line(library, backbone):
    with Library(library) as lib:
        first = lib.current_representation()
        rep, saved = add_tuned(lib, backbone)
        reembed(lib, rep.id, **REEMBED)
    assert run("tune", "--library", str(library)).exit_code == 0  # ends the switch: the lists follow
    Path(saved.path).unlink()  # the tuned weights file lost (a restore from an incomplete backup, say)
    status = run("status", "--library", str(library))
    assert status.exit_code == 0 and f"warning: the weights file of representation {rep.id}" in status.output
    assert "is missing" in status.output
    result = run("tune", "--library", str(library))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "does not exist: restore the file" in result.output
    assert f"`lookalike tune --revert` goes back to representation {first.id}" in result.output
