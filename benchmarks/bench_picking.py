"""Picking benchmark: train / validate / test on the simulated default dataset.

For each channel width: trains within a time budget on tomogram 1 (validation on
tomogram 2), picks tomogram 3 (with --test-tomograms N, N held-out tomograms, and the
figures are their means) with 1, 2 and 4 test-time flips, and prints localisation
P/R/F1 (all species and species >= 12 voxels), per-class F1 and mean, AP, training wall
time, inference seconds and voxels per second, the extrapolation to 200x512x512, peak
RSS, model size, FLOPs per voxel and the tile-overlap overhead. With --big, one
200x512x512 tomogram is also picked for real with the first width.

Also picks the training tomogram itself (``train_tomogram_flips2``): a test F1 far below
it means the data limit the model, a low one there that the training budget does.

Usage: python benchmarks/bench_picking.py [--minutes 10] [--bin 2] [--widths 16,32,48,64 8,16,24,36] [--big]
       [--patch auto] [--batch auto] [--seed 0] [--train-tomograms 1] [--test-tomograms 1] [--save-model FILE]
"""
import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np
import torch

from picker3d.engine.formats.table import CoordTable
from picker3d.engine.metrics import evaluate
from picker3d.engine.modelfile import load_model
from picker3d.engine.network import COORD_CONV, ResUNet3D, count_parameters, flops_per_voxel
from picker3d.engine.picking.tiles import tile_overhead
from picker3d.engine.picking.tomogram import pick_tomogram
from picker3d.engine.simulation.dataset import simulate_tomogram
from picker3d.engine.training import train

BIG = (200, 512, 512)


def score(picked, ref, diam, big_only=False):
    if big_only:
        keep_p = [i for i, c in enumerate(picked.classes) if diam[c] >= 12]
        keep_r = [i for i, c in enumerate(ref.classes) if diam[c] >= 12]
        picked, ref = picked.subset(keep_p), ref.subset(keep_r)
    return evaluate(picked, ref, diam)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--widths", nargs="+", default=["16,32,48,64", "8,16,24,36"])
    p.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256])
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--patch", type=int, default=None, help="training patch (default: train's automatic choice)")
    p.add_argument("--batch", type=int, default=None, help="patches per step (default: automatic)")
    p.add_argument("--bin", type=int, default=2)
    p.add_argument("--flips", type=int, default=2, help="test-time flips used in validation (stored in the model)")
    p.add_argument("--loss", default="dice+ce")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--big", action="store_true", help="also pick a 200x512x512 tomogram for real")
    p.add_argument("--no-augment", action="store_true", help="mirrors only (measure what augmentation brings)")
    p.add_argument("--rotation", type=float, default=None,
                   help="largest augmentation rotation about z in degrees (default: the engine's)")
    p.add_argument("--iters", type=int, default=30, help="iterations per epoch (validation after each)")
    p.add_argument("--coord-conv", default="z", choices=("xyz", "z", "none"),
                   help="position channels: the whole-tomogram x, y, z; z only; none")
    p.add_argument("--min-mask", type=float, default=9.0, help="smallest label diameter (network voxels)")
    p.add_argument("--max-mask-ratio", type=float, default=None,
                   help="largest label diameter over the class's own (default: the engine's; 0 = no cap)")
    p.add_argument("--seed", type=int, default=0, help="training seed (the data stay the same)")
    p.add_argument("--no-val", action="store_true",
                   help="train without the validation tomogram (as a user with one annotated tomogram): "
                        "--holdout decides what calibrates")
    p.add_argument("--bin-phases", action=argparse.BooleanOptionalAction, default=True,
                   help="see picker3d train --bin-phases (--no-bin-phases: the unshifted grid only)")
    p.add_argument("--holdout", type=float, default=0.0, help="see picker3d train --holdout")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="network arithmetic in training and picking (auto: bfloat16 where the CPU has it)")
    p.add_argument("--train-tomograms", type=int, default=1,
                   help="annotated training tomograms (validation and test stay tomograms 101 and 102)")
    p.add_argument("--test-tomograms", type=int, default=1,
                   help="held-out test tomograms (102, then 200, 201, ...); figures are their means "
                        "(one tomogram of ~100 particles moves F1 by +-0.03)")
    p.add_argument("--save-model", default=None, help="keep the first width's model file here")
    p.add_argument("--ema", type=float, default=0.99, help="weight averaging decay per step (see picker3d train --ema)")
    p.add_argument("--mask-diameter", type=float, default=None,
                   help="one weak-label diameter for every class (network voxels; DeepETPicker's Const7/9)")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    # tomograms 100 (train), 101 (validation), 102 (test); extra training tomograms 103, 104, ...
    # extra test tomograms 200, 201, ...
    seeds = ([100, 101, 102] + [103 + i for i in range(a.train_tomograms - 1)]
             + [200 + i for i in range(a.test_tomograms - 1)])
    sims = [simulate_tomogram(shape=tuple(a.shape), seed=s, snr=a.snr) for s in seeds]
    tabs = [CoordTable.from_rows(s["rows"]) for s in sims]
    train_idx = [0] + list(range(3, 3 + a.train_tomograms - 1))
    test_idx = [2] + list(range(3 + a.train_tomograms - 1, len(sims)))
    diam = {k: v["diameter_vox"] for k, v in sims[0]["manifest"]["species"].items()}
    classes = list(diam)
    print(f"dataset: {len(sims)} tomograms ({a.train_tomograms} for training, {a.test_tomograms} for testing) "
          f"{tuple(a.shape)} SNR {a.snr}, species {diam}, "
          f"particles {[len(t) for t in tabs]}, bin {a.bin}", flush=True)
    results = {}
    nvox = int(np.prod(a.shape))
    for w in a.widths:
        ch = tuple(int(c) for c in w.split(","))
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "m.pt")
            t0 = time.time()
            train([sims[i]["tomogram"] for i in train_idx], [tabs[i] for i in train_idx], classes, diam, out,
                  [] if a.no_val else [sims[1]["tomogram"]], [] if a.no_val else [tabs[1]], holdout=a.holdout, bin_phases=a.bin_phases,
                  epochs=1000, minutes=a.minutes, iters_per_epoch=a.iters, patch=a.patch, batch=a.batch,
                  channels=ch, seed=a.seed, bin=a.bin, flips=a.flips, loss=a.loss, lr=a.lr,
                  log=lambda m: print("  " + m, flush=True), augment=not a.no_augment, min_mask=a.min_mask, max_mask_ratio=a.max_mask_ratio,
                  coord_conv=COORD_CONV[a.coord_conv], mask_diameter=a.mask_diameter, precision=a.precision, ema=a.ema,
                  **({} if a.rotation is None else {"rotation": a.rotation}))
            t_train = time.time() - t0
            model, meta = load_model(out)
            size_mb = os.path.getsize(out) / 1e6
            if a.save_model and w == a.widths[0]:
                import shutil
                shutil.copyfile(out, a.save_model)
        res = {"channels": list(ch), "train_tomograms": a.train_tomograms, "seed": a.seed, "patch": meta["patch"],
               "batch": meta.get("batch"), "coord_conv": a.coord_conv, "mask_diameter": a.mask_diameter, "bin": a.bin, "augment": not a.no_augment, "rotation": meta.get("rotation"), "loss": a.loss, "precision": meta.get("precision"),
               "min_mask": a.min_mask, "max_mask_ratio": meta.get("max_mask_ratio"), "ema": a.ema, "no_val": a.no_val, "holdout": a.holdout, "bin_phases": a.bin_phases, "train_s": round(t_train, 1), "epochs": len(meta["history"]),
               "best_val_f1": round(meta["best_val_f1"], 3), "parameters": count_parameters(model),
               "model_mb": round(size_mb, 2), "flops_per_voxel": int(flops_per_voxel(ResUNet3D(len(classes), ch))),
               "tile_overhead": round(tile_overhead([s // a.bin for s in BIG], meta["tile"], meta["pad"]), 2)}
        for flips in (1, 2, 4):
            runs, t_pick = [], 0.0
            for i in test_idx:
                t0 = time.time()
                picked, _ = pick_tomogram(model, meta, sims[i]["tomogram"], flips=flips, precision=a.precision)
                t_pick += time.time() - t0
                runs.append((score(picked, tabs[i], diam), score(picked, tabs[i], diam, big_only=True)))
            t_pick /= len(test_idx)

            def mean(get, runs=runs):
                return round(float(np.mean([get(r, rb) for r, rb in runs])), 3)
            res[f"flips{flips}"] = {
                "precision": mean(lambda r, rb: r["precision"]), "recall": mean(lambda r, rb: r["recall"]),
                "f1": mean(lambda r, rb: r["f1"]), "f1_d>=12": mean(lambda r, rb: rb["f1"]),
                "mean_class_f1": mean(lambda r, rb: r["mean_class_f1"]), "ap": mean(lambda r, rb: r["ap"]),
                "per_class_f1": {k: mean(lambda r, rb, k=k: r["per_class"][k]["f1"]) for k in runs[0][0]["per_class"]},
                "pick_s": round(t_pick, 2), "mvox_per_s": round(nvox / t_pick / 1e6, 3),
                "extrapolated_200x512x512_s": round(np.prod(BIG) / (nvox / t_pick), 1)}
            if len(test_idx) > 1:
                res[f"flips{flips}"]["f1_d>=12_per_tomogram"] = [round(rb["f1"], 3) for _, rb in runs]
        # the training tomogram itself: a large gap to the test F1 means the data, not the
        # optimisation, limits the model
        picked, _ = pick_tomogram(model, meta, sims[0]["tomogram"], flips=2, precision=a.precision)
        r = score(picked, tabs[0], diam)
        res["train_tomogram_flips2"] = {"f1": round(r["f1"], 3), "f1_d>=12": round(score(picked, tabs[0], diam, True)["f1"], 3),
                                        "mean_class_f1": round(r["mean_class_f1"], 3)}
        res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        results[w] = (res, model, meta)
        print(json.dumps(res), flush=True)
    if len(results) > 1:
        ws = list(results)
        r0, r1 = results[ws[0]][0]["flips2"], results[ws[1]][0]["flips2"]
        print(f"width comparison (flips 2): F1 {ws[1]} / {ws[0]} = {r1['f1'] / max(r0['f1'], 1e-9):.2f}, "
              f"class F1 ratio {r1['mean_class_f1'] / max(r0['mean_class_f1'], 1e-9):.2f}, "
              f"speed ratio {r1['mvox_per_s'] / r0['mvox_per_s']:.2f}")
    if a.big:
        res, model, meta = results[a.widths[0]]
        big = simulate_tomogram(shape=BIG, seed=103, snr=a.snr)
        for flips in (1, 2):
            t0 = time.time()
            picked, _ = pick_tomogram(model, meta, big["tomogram"], flips=flips, precision=a.precision)
            t_big = time.time() - t0
            r = score(picked, CoordTable.from_rows(big["rows"]), diam)
            print(json.dumps({"measured_200x512x512": {"width": a.widths[0], "flips": flips,
                                                       "seconds": round(t_big, 1), "particles": len(picked),
                                                       "f1": round(r["f1"], 3),
                                                       "mean_class_f1": round(r["mean_class_f1"], 3)}}), flush=True)


if __name__ == "__main__":
    main()
