"""Self-supervised adaptation without labels (issue 18, "measure, ship only if it wins"): SimCLR on
the collection's own photos, last stages only, then k-NN quality before and after.

    python -m bench.self_supervised [--corpus DIR] [--train-photos 600] [--epochs 3] [--stages 2]
                                    [--photos-per-class 0] [--json FILE]

SimCLR (Chen et al. 2020): two random views of each photo, the backbone's pooled features through a
small projector (1280 -> 512 -> 128), the NT-Xent loss (temperature 0.2) over the batch's 2B views.
The last `--stages` stages of the backbone (with conv_head) and the projector train, with AdamW and
batch norms frozen, as fine-tuning does (indexer.finetune). No label is read for training; the
labels only score the result: k-NN leave-one-out top-1 (weighted 20-NN) and P@10 over all photos,
on the pooled features (the projector is thrown away), frozen vs adapted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import cpu_flags
from bench.tune import DEFAULT_CORPUS, knn_quality, load_corpus
from indexer.backbone import Backbone
from indexer.finetune import embed_files, load_photos, save_weights
from indexer.library import Library

PROJECTION = (512, 128)
TEMPERATURE = 0.2


def simclr(backbone: Backbone, paths: list[Path], *, stages: int, epochs: int, batch_size: int, lr: float,
           seed: int) -> tuple[dict, list[float]]:
    """(the adapted backbone's state_dict, mean loss per epoch)."""
    import torch
    from torchvision.transforms import v2 as T

    from indexer.finetune._train import _fresh_model, _is_norm, _split

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model: Any = _fresh_model(backbone)
    frozen, tail = _split(model, stages)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for m in tail for name, p in m.named_parameters() if not _is_norm(m, name)]
    for p in trainable:
        p.requires_grad_(True)
    model.eval()
    device = backbone.device
    autocast = backbone.autocast_dtype if backbone.autocast_dtype == torch.bfloat16 else None
    pp = backbone.preprocess
    photos = load_photos([(p, 0) for p in paths], pp.resize)
    augment = T.Compose([
        T.RandomResizedCrop(pp.crop, scale=(0.2, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ])
    projector = torch.nn.Sequential(torch.nn.Linear(backbone.dim, PROJECTION[0]), torch.nn.ReLU(),
                                    torch.nn.Linear(*PROJECTION)).to(device)
    opt = torch.optim.AdamW([{"params": trainable, "lr": lr}, {"params": projector.parameters(), "lr": lr * 10}],
                            weight_decay=0.01)
    steps = epochs * (len(photos) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))

    def features(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            with torch.no_grad():
                for m in frozen:
                    x = m(x)
            for m in tail:
                x = m(x)
            return model.global_pool(x).float()

    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(photos))
        epoch_losses = []
        for start in range(0, len(order) - batch_size + 1, batch_size):  # full batches: B negatives each
            pix = [photos.pixels[i] for i in order[start : start + batch_size]]
            x = pp.normalize(torch.stack([augment(p) for p in pix] + [augment(p) for p in pix]))
            z = torch.nn.functional.normalize(projector(features(x)), dim=1)
            sims = z @ z.T / TEMPERATURE
            sims.fill_diagonal_(-1e9)
            n = len(pix)
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(device)
            loss = torch.nn.functional.cross_entropy(sims, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)))
        print(f"epoch {epoch + 1}: NT-Xent {losses[-1]:.3f}", flush=True)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    return state, losses


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--photos-per-class", type=int, default=0, help="photos scored per class at most (0: all)")
    ap.add_argument("--train-photos", type=int, default=600, help="unlabelled photos SimCLR trains on")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4, help="the backbone's (the projector's is 10 x)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    paths, codes, classes = load_corpus(args.corpus, args.photos_per_class or None, args.seed)
    if len(classes) < 2:
        raise SystemExit(f"no labelled photos (class-per-folder) under {args.corpus}: pass --corpus DIR")
    frozen = Backbone()
    ok, frozen_vectors = embed_files(frozen, paths)
    paths, codes, frozen_vectors = [p for p, k in zip(paths, ok, strict=True) if k], codes[ok], frozen_vectors[ok]
    rng = np.random.default_rng(args.seed)
    train = [paths[i] for i in sorted(rng.choice(len(paths), min(args.train_photos, len(paths)), replace=False))]
    report: dict = {
        "command": "python -m bench.self_supervised " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu_flags": cpu_flags(),
        "photos": len(paths),
        "train_photos": len(train),
        "knn_frozen": knn_quality(frozen_vectors, codes),
    }
    print(f"{len(paths)} photos; frozen k-NN {report['knn_frozen']}", flush=True)
    started = time.perf_counter()
    state, losses = simclr(frozen, train, stages=args.stages, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed)
    report["train_seconds"] = round(time.perf_counter() - started, 1)
    report["losses"] = [round(x, 4) for x in losses]
    with tempfile.TemporaryDirectory() as tmp, Library(tmp, create=True) as lib:
        adapted = Backbone(frozen.name, weights=save_weights(lib, state).path, device=str(frozen.device))
        _, adapted_vectors = embed_files(adapted, paths)
    report["knn_adapted"] = knn_quality(adapted_vectors, codes)
    report["improves_both"] = all(report["knn_adapted"][k] > report["knn_frozen"][k] for k in report["knn_frozen"])
    report["load_average"] = os.getloadavg()
    print(json.dumps(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
