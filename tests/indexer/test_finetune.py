"""Fine-tuning (indexer/finetune): a very short LP-FT run on real sample photos with the real
backbone gives a weights file that Backbone loads, that both engines run, and that embeds differently."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from indexer.backbone import Backbone
from indexer.engines import OpenVinoEngine, make_engine
from indexer.finetune import Cancelled, TuneConfig, embed_files, fine_tune, save_weights, score_candidate
from indexer.library import Library
from tests.conftest import SAMPLES

CLASSES = ["dress", "hat", "pants", "shoes"]  # four of the samples' class folders


def labelled(per_class: int, skip: int = 0) -> list:
    """(photo, class code) pairs: `per_class` photos of each class, after the first `skip`."""
    return [(f, i) for i, c in enumerate(CLASSES) for f in sorted((SAMPLES / c).glob("*.jpg"))[skip : skip + per_class]]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, backbone):
    """One short fine-tune (3 photos a class, 1 epoch, no held-out fold: the last weights come back)
    and its saved weights, shared by the module."""
    photos = labelled(3)
    broken = tmp_path_factory.mktemp("broken") / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    events = []
    result = fine_tune([*photos, (broken, 0)], 4, backbone, seed=1, heldout=(),
                       config=TuneConfig(max_epochs=1, batch_size=8),
                       progress=events.append)
    library = Library(tmp_path_factory.mktemp("library"), create=True)
    saved = save_weights(library, result.state_dict)
    yield result, saved, events
    library.close()


def test_a_short_fine_tune_gives_weights_that_load_and_embed_differently(tuned, backbone):
    result, saved, events = tuned
    assert [p.name for p, _ in result.skipped] == ["broken.jpg"]  # skipped, not fatal
    assert (result.n_train, result.n_heldout, result.best_epoch) == (12, 0, 1)
    assert result.trunk == ("openvino" if result.precision == "fp32" else "torch")  # on this CPU
    assert len(result.history) == 1 and {e.phase for e in events} == {"decode", "probe", "train"}
    assert saved.path.parent.name == "representations" and saved.path.name == f"{saved.sha256}.pth"
    # Same keys and shapes as the backbone's own weights: what Backbone(weights=FILE) loads strictly.
    original = backbone.model.state_dict()
    assert set(result.state_dict) == set(original)
    assert all(result.state_dict[k].shape == original[k].shape for k in original)
    # Only the last 2 stages and conv_head moved; batch norms and the early stages did not.
    moved = {k for k in original if not np.array_equal(result.state_dict[k].numpy(), original[k].cpu().numpy())}
    assert moved and all(k.startswith(("blocks.5.", "blocks.6.", "conv_head.")) for k in moved)
    assert not any(".bn" in k or k.startswith("bn") for k in moved)

    tuned_backbone = Backbone(backbone.name, weights=saved.path, device="cpu")
    assert tuned_backbone.weights_identity == saved.identity != backbone.weights_identity
    paths = [p for p, _ in labelled(2, skip=6)]
    ok, frozen_vectors = embed_files(backbone, paths, engine="torch")
    assert ok.all()
    _, torch_vectors = embed_files(tuned_backbone, paths, engine="torch")
    _, openvino_vectors = embed_files(tuned_backbone, paths, engine="openvino")
    assert np.allclose(np.linalg.norm(torch_vectors, axis=1), 1.0, atol=1e-4)
    assert np.abs(torch_vectors - frozen_vectors).max() > 1e-3
    assert (torch_vectors * openvino_vectors).sum(axis=1).min() > 0.99
    # OpenVINO's converted model is keyed on the weights' hash: the tuned one is converted apart.
    ov_frozen = make_engine(backbone, "openvino")
    ov_tuned = make_engine(tuned_backbone, "openvino")
    assert isinstance(ov_tuned, OpenVinoEngine) and isinstance(ov_frozen, OpenVinoEngine)
    assert ov_tuned.model_path != ov_frozen.model_path and ov_tuned.model_path.exists()


def test_early_stopping_returns_the_best_epoch(backbone):
    """With a held-out fold, the weights that come back are the best epoch's: epoch 0 (the probe on
    the untouched backbone) gives the original weights back."""
    result = fine_tune(labelled(3), 4, backbone, seed=2, config=TuneConfig(max_epochs=2, batch_size=8, patience=1))
    assert result.n_heldout == 4 and 1 <= len(result.history) <= 2
    accuracy = [result.probe_accuracy] + [e.heldout_accuracy for e in result.history]
    assert result.tuned_accuracy == accuracy[result.best_epoch] == max(accuracy)
    original = backbone.model.state_dict()
    same = all(np.array_equal(result.state_dict[k].numpy(), original[k].cpu().numpy()) for k in original)
    assert same == (result.best_epoch == 0)


def test_pseudo_labelled_photos_are_trained_on_and_never_held_out(backbone, tmp_path):
    """`extra` (search.pseudo_labels) joins the training photos; early stopping holds out the
    labels' own fold only, and an extra file that does not decode is left out, not listed."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    config = TuneConfig(max_epochs=1, batch_size=8, patience=1)
    plain = fine_tune(labelled(3), 4, backbone, seed=2, config=config)
    result = fine_tune(labelled(3), 4, backbone, seed=2, config=config, extra=[*labelled(2, skip=6), (broken, 0)])
    assert (plain.n_train, plain.n_heldout) == (8, 4)
    assert (result.n_train, result.n_heldout) == (8 + 8, 4) and result.skipped == []


def test_the_same_representation_scores_no_gain(backbone):
    train, heldout = labelled(2), labelled(1, skip=5)
    score = score_candidate(train, heldout, 4, backbone, backbone, engine="torch")
    assert (score.n_train, score.n_heldout) == (8, 4)
    assert score.gain == 0.0 and 0.0 <= score.frozen_accuracy <= 1.0


def test_cancelling_stops_before_anything_is_trained(backbone):
    cancel = threading.Event()

    def stop_after_decoding(progress):
        if progress.phase == "probe":
            cancel.set()

    with pytest.raises(Cancelled):
        fine_tune(labelled(2), 4, backbone, config=TuneConfig(max_epochs=1), progress=stop_after_decoding,
                  cancel=cancel)


def test_the_frozen_stages_run_on_openvino_in_fp32_with_torchs_numbers(backbone):
    """Where training runs fp32 on the CPU, OpenVINO runs the frozen stages (5.8 times torch on an
    AVX2 CPU) and gives what torch gives; asked for torch, torch runs them."""
    import torch

    from indexer.finetune._train import _fresh_model, _split
    from indexer.finetune._trunk import openvino_trunk
    from indexer.imageio import load_image

    pp = backbone.preprocess
    frozen, _ = _split(_fresh_model(backbone).eval(), 2)
    crops = [pp.crop_uint8(load_image(p, min_side=pp.resize)[0]) for p, _ in labelled(2)]
    x = pp.normalize(torch.stack(crops)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = x
        for m in frozen:
            expected = m(expected)
    trunk = openvino_trunk(frozen, (backbone.weights_identity, 2), pp.crop)
    assert trunk is not None
    got = trunk(x)
    assert got.shape == expected.shape == (8, 112, 14, 14)
    scale = float(expected.abs().max())
    assert scale > 1 and float((got - expected).abs().max()) < 1e-3 * scale

    result = fine_tune(labelled(2), 4, backbone, heldout=(), config=TuneConfig(max_epochs=1, precision="fp32"))
    assert (result.precision, result.trunk) == ("fp32", "openvino")
    result = fine_tune(labelled(2), 4, backbone, heldout=(),
                       config=TuneConfig(max_epochs=1, precision="fp32", trunk="torch"))
    assert (result.precision, result.trunk) == ("fp32", "torch")
