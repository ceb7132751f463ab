"""Whether to keep a tune: cross-fitting on the user's labels, a paired test, and the final fit.

    labels --dealt into scoring_folds(labels) folds (4 while the labels are few, else 2), per class-->
        for each fold: fit_candidate(the other folds + their pseudo-labels) -> score_candidate(on this fold)
    pooled over the folds: every labelled photo scored once, by weights that never saw it
    kept  <=>  the labels' mean log-likelihood higher (paired, pooled); the accuracies are shown beside it
    kept  ->   refit on every label (+ their pseudo-labels) with the folds' stages and epochs, then
               averaged half and half with the mean of the candidates their own fold measured
               better (a model soup): the weights `tune` keeps

Why cross-fitting: a single 30 % fold is 10 photos at 3 labels a class on 10 classes (one photo is
10 points) and 20 at 8 a class; a 4-point gain is under one photo there, so no test can see it.
The folds score every label (3.3 times the photos of a 30 % fold); 2 folds cost about the training
of one held-out fold plus the final fit, 4 folds 3 times that (used while the labels are few).
Why the log-likelihood: see indexer.finetune._paired. Why it alone, and not also "accuracy not lower"
(the rule until 2026-12-07): on 80 scored labels the candidates' accuracy did not track what the
kept weights gained on the unlabelled rest. Over 10 draws at 8 labels a class on clothing_small,
the scored accuracy moved from -7.5 to +8.8 points while the rest gained +0.5 to +4.8 in every
draw; the accuracy half alone discarded 2 draws, whose tuned weights gained +1.2 and +2.1 (BENCHMARKS.md,
"The keep rule reads the log-likelihood"). A count of right and wrong on 80 photos moves by 1.25
points a photo; the log-likelihood also counts how sure each probe was of each label.

Why "measured better" and not "better at p < 0.05": the scored candidates are each trained on part
of the labels, the kept weights on all of them, and the kept weights were never worse than the
frozen vectors on the unlabelled rest of clothing_small in any measured draw (3, 8 and 20 labels a
class; BENCHMARKS.md, "The keep rule"), while a 5 % test discarded weights gaining 3 to 5 points in
one draw of two at 8 labels a class. Keeping on the measurement itself costs little when the
candidates are no better (a tune that did not help leaves the space much as it was, and `--revert`
undoes it) and keeps the gains the test could not see on 80 labels. The paired test's p-value is
still computed and shown, as how sure the measurement is.

Why a soup: the fold candidates are trained anyway, to be scored, and start from the same weights as
the refit, so their weights can be averaged (Wortsman et al. 2022, "Model soups"; the batch norms
are frozen, so only the trained weights differ). Averaging fine-tuned weights cancels part of what
each run learned from its own sample of the labels and of augmented views. A candidate goes into
the soup only when its own fold measured it better (`keep` on that fold), as a greedy soup admits
an ingredient only when it helps on held-out data. On clothing_small's unlabelled rest this beat the
refit alone in 7 of the 8 kept tunes measured at 3, 8 and 20 labels a class (-0.7 to +0.8 points,
+0.3 on the mean; BENCHMARKS.md, "A soup of the folds"), at no training cost.

Why pseudo-labels (search.pseudo_labels): a fold's candidate and the refit also train on the photos
nobody labelled that a probe on their training labels is surest of. The scoring folds' photos are
labelled, so never pseudo-labelled: each fold is still scored by weights that never saw it, on the
user's labels only.

torch is imported inside the functions that run it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from indexer.backbone import Backbone
    from indexer.finetune import CandidateScore, TuneConfig, TuneResult
    from indexer.library import Library
    from search.pseudo_labels import PseudoLabeller

log = logging.getLogger(__name__)

# Labels are dealt into folds, each scored by a candidate trained on the others. A fold's candidate
# is weaker than the final fit on every label, the more so the fewer the labels: at 8 a class on
# clothing_small, candidates on half the labels (2 folds) showed no gain where the final weights
# gained 3 to 5 points on the unlabelled rest; on three quarters (4 folds) one draw of two was kept
# (BENCHMARKS.md, "The learning rates"). What makes a half-trained candidate weak is few labels in each
# class, so the rule looks at the median class too: 17 classes at 8 labels each are 136 labels, but a
# candidate on half of them sees 4 a class, as on clothing_small's 10 classes at 8. With many labels a
# class half of them is close to all, and 4 folds would cost 3 times the training of 2.
SCORING_FOLDS = 2
SCORING_FOLDS_FEW = 4  # up to FEW_LABELS labels, or while the median class has fewer than FEW_PER_CLASS
FEW_LABELS = 120  # 4 folds cost 3 times the training of 2, which is small below this many labels
FEW_PER_CLASS = 10
DEFAULT_STAGES = (1, 2)  # candidate numbers of unfrozen stages, chosen by the early-stopping fold
# Below this many photos in the early-stopping fold, its accuracy moves in steps too coarse to stop
# on (the probe alone often scores 1.0 on 3 photos): train `max_epochs` on every training photo with
# the last of `stages`, and let the scoring folds decide.
MIN_EARLY_STOP = 20
SOUP_REFIT_SHARE = 0.5  # the refit's share of the kept weights; the folds' candidates share the rest

Progress = Callable[[str, int, int], None]


class NoCandidate(Exception):
    """No candidate could be trained (a message for TuneFailed)."""


@dataclass
class Decision:
    """What cross-fitting measured and decided."""

    score: CandidateScore  # pooled over the folds
    stages: int  # the folds' most frequent choice (fewer on a tie)
    epochs: int  # the mean of the folds' best epochs (0: the untouched backbone won everywhere)
    kept: bool
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # The weights (state_dicts, on the CPU) of the folds' candidates that trained past epoch 0 and that
    # their own fold measured better: the refit is averaged with them (`soup`). About 19 MB each for
    # Lite0, one per fold at most.
    candidates: list[dict[str, Any]] = field(default_factory=list)
    pseudo_labelled: int = 0  # pseudo-labelled photos a fold's candidate trained with, on the mean

    @property
    def p_value(self) -> float:
        return self.score.p_value


def keep(score: CandidateScore) -> bool:
    """The keep rule: measured better on the scored photos, every label scored once by weights that
    never saw it: their labels' mean (calibrated) log-likelihood higher (module doc)."""
    return score.n_heldout > 0 and score.loglik_gain > 0


def scoring_folds(codes: npt.NDArray[np.int64]) -> int:
    """How many folds cross-fitting deals labels of these class codes into (see SCORING_FOLDS)."""
    per_class = np.bincount(codes)
    few_a_class = float(np.median(per_class[per_class > 0])) < FEW_PER_CLASS if len(codes) else True
    return SCORING_FOLDS_FEW if len(codes) <= FEW_LABELS or few_a_class else SCORING_FOLDS


def stratified_folds(codes: npt.NDArray[np.int64], k: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """Rows dealt into `k` folds: each class's photos shuffled and dealt in turn, each class starting
    where the previous one stopped (so the folds' sizes differ by one photo at most)."""
    folds: list[list[int]] = [[] for _ in range(k)]
    turn = 0
    for c in np.unique(codes):
        for row in rng.permutation(np.flatnonzero(codes == c)):
            folds[turn % k].append(int(row))
            turn += 1
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def fit_candidate(
    train: Sequence[tuple[Path, int]],
    n_classes: int,
    frozen: Backbone,
    *,
    config: TuneConfig | None = None,
    stages: Sequence[int] = DEFAULT_STAGES,
    extra: Sequence[tuple[Path, int]] = (),
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[int, TuneResult]:
    """(stages, fine_tune's result) of one candidate: each of `stages` early-stopped on its own fold
    of `train`, the best kept (fewer stages on a tie); below MIN_EARLY_STOP photos in that fold, the
    last of `stages` trained `max_epochs` on all of `train`. `extra` (pseudo-labelled photos) is
    trained on too, never held out."""
    from indexer.finetune import TuneConfig, fine_tune

    base = config or TuneConfig()
    early_stop = round(len(train) * base.holdout) >= MIN_EARLY_STOP
    candidates = list(stages) if early_stop else list(stages)[-1:]
    best = None
    for n_stages in candidates:
        def tick(p, n_stages=n_stages):
            if progress:
                progress(p.phase if len(candidates) == 1 else f"{p.phase} ({n_stages} stages)", p.done, p.total)

        result = fine_tune(train, n_classes, frozen, config=replace(base, stages=n_stages), seed=seed,
                           heldout=None if early_stop else (), extra=extra, progress=tick, cancel=cancel)
        log.info("%d stages: early-stopping accuracy %.3f (probe %.3f), best epoch %d", n_stages,
                 result.tuned_accuracy, result.probe_accuracy, result.best_epoch)
        if best is None or result.tuned_accuracy > best[1].tuned_accuracy:
            best = (n_stages, result)
    if best is None:
        raise NoCandidate("no number of stages to try")
    return best


def cross_fit(
    items: Sequence[tuple[Path, int]],
    n_classes: int,
    frozen: Backbone,
    scratch: Library,
    *,
    config: TuneConfig | None = None,
    stages: Sequence[int] = DEFAULT_STAGES,
    folds: int | None = None,
    engine: str = "auto",
    pseudo: PseudoLabeller | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Decision:
    """Score tuning on every label by cross-fitting and decide (see the module doc). Each fold's
    candidate weights are written to `scratch`'s representations folder while they are scored, then
    deleted (unless a representation already uses the same file). `pseudo` gives each candidate's
    pseudo-labelled photos from its training labels (none: labels only). Raises TuneError, BackboneError,
    NoCandidate, indexer.cancel.Cancelled."""
    from indexer.backbone import Backbone
    from indexer.finetune import pooled, save_weights, score_candidate

    rng = np.random.default_rng(seed)
    codes = np.asarray([c for _, c in items], dtype=np.int64)
    parts = stratified_folds(codes, folds or scoring_folds(codes), rng)
    scores, chosen, skipped, candidates, n_pseudo = [], [], [], [], []
    for k, part in enumerate(parts):
        held = set(part.tolist())
        train = [items[i] for i in range(len(items)) if i not in held]
        scoring = [items[i] for i in part]
        extra = pseudo(train, n_classes) if pseudo else []
        n_pseudo.append(len(extra))
        n_stages, result = fit_candidate(train, n_classes, frozen, config=config, stages=stages, extra=extra,
                                         seed=seed + k, progress=progress, cancel=cancel)
        skipped += result.skipped
        saved = save_weights(scratch, result.state_dict)
        try:
            tuned = Backbone(frozen.name, weights=saved.path, device=str(frozen.device))
            if progress:
                progress("score", k, len(parts))
            score = score_candidate(train, scoring, n_classes, frozen, tuned, engine=engine, cancel=cancel)
        finally:
            forget_unused(scratch, saved.path, saved.sha256)
        log.info("fold %d of %d: %d stages, best epoch %d; frozen %.3f, tuned %.3f on %d photos", k + 1, len(parts),
                 n_stages, result.best_epoch, score.frozen_accuracy, score.tuned_accuracy, score.n_heldout)
        scores.append(score)
        chosen.append((n_stages, result.best_epoch))
        if result.best_epoch > 0 and keep(score):  # an ingredient its own fold measured better
            candidates.append(result.state_dict)
    if progress:
        progress("score", len(parts), len(parts))
    score = pooled(scores)
    improved = [(s, e) for s, e in chosen if e > 0]
    n_stages = min(Counter(s for s, _ in improved or chosen).most_common(), key=lambda t: (-t[1], t[0]))[0]
    epochs = round(float(np.mean([e for _, e in improved]))) if improved else 0
    decision = Decision(score, n_stages, epochs, kept=epochs > 0 and keep(score), skipped=skipped,
                        candidates=candidates, pseudo_labelled=round(float(np.mean(n_pseudo))))
    log.info("pooled over %d folds: frozen %.3f, tuned %.3f on %d photos, log-likelihood %+.3f a photo, "
             "p = %.3f: %s", len(parts), score.frozen_accuracy, score.tuned_accuracy, score.n_heldout,
             score.loglik_gain, decision.p_value, "keep" if decision.kept else "discard")
    return decision


def refit(
    items: Sequence[tuple[Path, int]],
    n_classes: int,
    frozen: Backbone,
    decision: Decision,
    *,
    config: TuneConfig | None = None,
    pseudo: PseudoLabeller | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> TuneResult:
    """The weights `tune` keeps: fine-tuned on every label (and the pseudo-labelled photos `pseudo`
    gives for them) with the decision's stages for exactly its epochs, then made a soup with the
    folds' candidates (`soup`)."""
    from indexer.finetune import TuneConfig, fine_tune

    base = replace(config or TuneConfig(), stages=decision.stages, max_epochs=decision.epochs)

    def tick(p):
        if progress:
            progress("refit", p.done, p.total)

    extra = pseudo(items, n_classes) if pseudo else []
    result = fine_tune(items, n_classes, frozen, config=base, seed=seed, heldout=(), extra=extra, progress=tick,
                       cancel=cancel)
    result.state_dict = soup(result.state_dict, decision.candidates)
    return result


def soup(refit: dict[str, Any], candidates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`refit`'s weights times SOUP_REFIT_SHARE plus the mean of the candidates' times the rest; the
    tensors that are not floating point (batch-norm counters) are `refit`'s. No candidates: `refit`."""
    if not candidates:
        return refit
    share = (1.0 - SOUP_REFIT_SHARE) / len(candidates)
    out = {}
    for key, value in refit.items():
        if value.is_floating_point():
            mixed = value * SOUP_REFIT_SHARE
            for c in candidates:
                mixed = mixed + c[key] * share
            out[key] = mixed.to(value.dtype).contiguous()
        else:
            out[key] = value
    return out


def forget_unused(library: Library, path: Path, sha256: str) -> None:
    """Delete a weights file no representation refers to: the library as it was before the tune."""
    if not any(r.weights_sha256 == sha256 for r in library.representations()):
        path.unlink(missing_ok=True)
