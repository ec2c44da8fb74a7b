"""Sparse-label benchmark: PU vs unlabeled-as-negative vs dense labels.

One training tomogram of which only a fraction of the particles is annotated, a fully
annotated validation tomogram (epoch choice and thresholds) and a fully annotated test
tomogram. For each species set and annotated fraction it trains

- ``pu``:    heatmap network, non-negative PU focal loss (prior from the true particle count),
- ``pn``:    the same network treating unlabeled voxels as negatives,
- ``dense``: the default supervised picker on 100 % of the labels (reference, once per set),

each within ``--minutes``, and prints F1 / AP at a radius of half the diameter, the paper's
AP at radius 2 and 5 voxels (r2, r5), per-class F1 and the training time.

Usage: python benchmarks/bench_pu.py [--species large | --species all] [--fractions 0.1 0.3]
       [--modes pu pn dense] [--minutes 10] [--snr 0.05] [--bin 2] [--lr 1e-3] [--seed 0] [--consistency 0.1]
       [--network slice2d] [--patch-depth 16] [--contrastive 0.1] [--rotation 180]
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from picker3d.engine.formats.table import CoordTable
from picker3d.engine.metrics import evaluate
from picker3d.engine.modelfile import load_model
from picker3d.engine.picking.tomogram import pick_tomogram
from picker3d.engine.simulation.dataset import simulate_tomogram
from picker3d.engine.simulation.species import SPECIES_BUILDERS
from picker3d.engine.training import train


def run(mode, frac, sims, tabs, classes, diam, a):
    rng = np.random.default_rng(0)
    full = tabs[0]
    if mode == "dense":
        annotated = full
    else:     # the same fraction of every class
        keep = []
        for c in classes:
            idx = np.where(full.classes == c)[0]
            keep += rng.choice(idx, max(1, int(round(frac * len(idx)))), replace=False).tolist()
        annotated = full.subset(sorted(keep))
    kw = {}
    if mode in ("pu", "pn"):
        kw = dict(labels="sparse", loss=mode, expected_particles=len(full))
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "m.pt")
        t0 = time.time()
        train([sims[0]["tomogram"]], [annotated], classes, diam, out, [sims[1]["tomogram"]], [tabs[1]],
              epochs=1000, minutes=a.minutes, iters_per_epoch=30, patch=a.patch, batch=a.batch, channels=(16, 32, 48, 64),
              seed=a.seed, lr=a.lr, consistency=a.consistency, bin=a.bin,
              network=a.network, patch_depth=a.patch_depth,
              contrastive=a.contrastive if mode != "dense" else 0.0, rotation=a.rotation, flips=2,
              log=lambda m: print("    " + m, flush=True), **kw)
        t_train = time.time() - t0
        model, meta = load_model(out)
    picked, _ = pick_tomogram(model, meta, sims[2]["tomogram"])
    r = evaluate(picked, tabs[2], diam)
    r2 = evaluate(picked, tabs[2], diam, radius=2.0)
    r5 = evaluate(picked, tabs[2], diam, radius=5.0)
    res = {"mode": mode, "fraction": 1.0 if mode == "dense" else frac, "annotated": len(annotated),
           "f1": round(r["f1"], 3), "precision": round(r["precision"], 3), "recall": round(r["recall"], 3),
           "ap": round(r["ap"], 3), "ap_r2": round(r2["ap"], 3), "ap_r5": round(r5["ap"], 3),
           "per_class_f1": {k: round(v["f1"], 3) for k, v in r["per_class"].items()},
           "epochs": len(meta["history"]), "train_s": round(t_train, 1), "network": meta.get("network", "resunet3d")}
    print(json.dumps(res), flush=True)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--species", nargs="+", default=["large"], help="species, or 'all' for the five")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3])
    p.add_argument("--modes", nargs="+", default=["pu", "pn", "dense"])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256])
    p.add_argument("--bin", type=int, default=2)
    p.add_argument("--count", type=int, default=None,
                   help="particles per species and tomogram (default: 50 for one species, the simulator's otherwise)")
    p.add_argument("--patch", type=int, default=48, help="training patch (48: the measured sparse-label setting)")
    p.add_argument("--batch", type=int, default=None, help="patches per step (default: the engine's, 4 cubes / 12 slabs)")
    p.add_argument("--network", default="resunet3d", choices=("resunet3d", "slice2d"))
    p.add_argument("--patch-depth", type=int, default=None, help="slab thickness (default: the engine's)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the engine's, 1e-3 sparse / 3e-3 dense)")
    p.add_argument("--seed", type=int, default=0, help="training seed (the data stay the same)")
    p.add_argument("--consistency", type=float, default=0.0, help="weight of the consistency term (the sparse-label paper, Eq. 14)")
    p.add_argument("--rotation", type=float, default=None,
                   help="largest augmentation rotation about z in degrees (default: the engine's)")
    p.add_argument("--contrastive", type=float, default=0.0, help="weight of the contrastive module (the sparse-label paper, Eq. 8-13)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    species = list(SPECIES_BUILDERS) if a.species == ["all"] else a.species
    count = a.count or (50 if len(species) == 1 else None)
    counts = {sp: count for sp in species} if count else None
    sims = [simulate_tomogram(shape=tuple(a.shape), seed=s, snr=a.snr, species=species, counts=counts)
            for s in (200, 201, 202)]
    tabs = [CoordTable.from_rows(s["rows"]) for s in sims]
    diam = {k: v["diameter_vox"] for k, v in sims[0]["manifest"]["species"].items()}
    classes = list(diam)
    print(f"dataset: {tuple(a.shape)} SNR {a.snr}, species {diam}, particles {[len(t) for t in tabs]}", flush=True)
    results = []
    for mode in a.modes:
        for frac in ([1.0] if mode == "dense" else a.fractions):
            results.append(run(mode, frac, sims, tabs, classes, diam, a))
    by = {(r["mode"], r["fraction"]): r for r in results}
    for frac in a.fractions:
        if ("pu", frac) in by and ("pn", frac) in by:
            print(f"{int(frac * 100)}% labels: F1 PU {by['pu', frac]['f1']:.3f} vs unlabeled-as-negative "
                  f"{by['pn', frac]['f1']:.3f} (difference {by['pu', frac]['f1'] - by['pn', frac]['f1']:+.3f})"
                  + (f"; dense 100% {by['dense', 1.0]['f1']:.3f}" if ("dense", 1.0) in by else ""), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
