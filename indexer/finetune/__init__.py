"""Fine-tuning the backbone on a library's labelled photos (LP-FT), saving the tuned weights into the
library folder, and scoring them against the frozen representation.

    fine_tune(photos, n_classes, backbone, config=TuneConfig(...))  -> TuneResult (state_dict in memory)
    save_weights(library, result.state_dict)                        -> SavedWeights (path, sha256, identity)
    score_candidate(train, heldout, n_classes, frozen, tuned)       -> CandidateScore (probe accuracy, both,
                                                                       and each photo's label log-likelihood)

Making the tuned weights the library's representation is indexer.reembed's work. torch is imported
inside the functions that run it.
"""

from indexer.cancel import Cancelled
from indexer.finetune._photos import PhotoSet, load_photos, stratified_split
from indexer.finetune._probe import LinearProbe, fit_probe
from indexer.finetune._score import CandidateScore, embed_files, pooled, probe_accuracy, probe_outcomes, score_candidate
from indexer.finetune._train import EpochStats, TuneConfig, TuneError, TuneProgress, TuneResult, fine_tune
from indexer.finetune._weights import SavedWeights, save_weights

__all__ = [
    "CandidateScore",
    "Cancelled",
    "EpochStats",
    "LinearProbe",
    "PhotoSet",
    "SavedWeights",
    "TuneConfig",
    "TuneError",
    "TuneProgress",
    "TuneResult",
    "embed_files",
    "fine_tune",
    "fit_probe",
    "load_photos",
    "pooled",
    "probe_accuracy",
    "probe_outcomes",
    "save_weights",
    "score_candidate",
    "stratified_split",
]
