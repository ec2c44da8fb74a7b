"""Picking benchmark (issue 3): train / validate / test on the simulated default dataset.

Prints localisation P/R/F1, per-class F1 and mean, AP, training wall time, inference time
per tomogram and voxels per second, the extrapolation to 200x512x512, peak RSS, model size
and FLOPs per voxel, for each channel width given.

Usage: python benchmarks/bench_picking.py [--minutes 10] [--widths 8,16,24,36 16,32,48,64]
"""
import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np
import torch

from picker3d.engine.coords import CoordTable
from picker3d.engine.metrics import evaluate
from picker3d.engine.network import ResUNet3D, count_parameters, flops_per_voxel
from picker3d.engine.simulate import simulate_tomogram
from picker3d.engine.train import load_model, pick_tomogram, train


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--widths", nargs="+", default=["8,16,24,36", "16,32,48,64"])
    p.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256])
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    sims = [simulate_tomogram(shape=tuple(a.shape), seed=s, snr=a.snr) for s in (100, 101, 102)]
    tabs = [CoordTable.from_rows(s["rows"]) for s in sims]
    diam = {k: v["diameter_vox"] for k, v in sims[0]["manifest"]["species"].items()}
    classes = list(diam)
    results = {}
    for w in a.widths:
        ch = tuple(int(c) for c in w.split(","))
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "m.pt")
            t0 = time.time()
            train([sims[0]["tomogram"]], [tabs[0]], classes, diam, out, [sims[1]["tomogram"]], [tabs[1]],
                  epochs=1000, minutes=a.minutes, iters_per_epoch=30, patch=a.patch, batch=a.batch,
                  channels=ch, seed=0)
            t_train = time.time() - t0
            model, meta = load_model(out)
            size_mb = os.path.getsize(out) / 1e6
        t0 = time.time()
        picked, _ = pick_tomogram(model, meta, sims[2]["tomogram"])
        t_pick = time.time() - t0
        r = evaluate(picked, tabs[2], diam)
        nvox = int(np.prod(a.shape))
        big = 200 * 512 * 512
        res = {"channels": ch, "train_s": round(t_train, 1), "epochs": len(meta["history"]),
               "precision": round(r["precision"], 3), "recall": round(r["recall"], 3), "f1": round(r["f1"], 3),
               "mean_class_f1": round(r["mean_class_f1"], 3), "ap": round(r["ap"], 3),
               "per_class_f1": {k: round(v["f1"], 3) for k, v in r["per_class"].items()},
               "pick_s": round(t_pick, 2), "mvox_per_s": round(nvox / t_pick / 1e6, 3),
               "extrapolated_200x512x512_s": round(big / (nvox / t_pick), 1),
               "parameters": count_parameters(model), "model_mb": round(size_mb, 2),
               "flops_per_voxel": int(flops_per_voxel(ResUNet3D(len(classes), ch))),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        results[w] = res
        print(json.dumps(res), flush=True)
    if len(results) > 1:
        ws = list(results)
        print(f"F1 ratio {ws[1]} / {ws[0]}: {results[ws[1]]['f1'] / max(results[ws[0]]['f1'], 1e-9):.2f}; "
              f"speed ratio: {results[ws[1]]['mvox_per_s'] / results[ws[0]]['mvox_per_s']:.2f}")


if __name__ == "__main__":
    main()
