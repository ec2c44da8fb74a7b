"""Picking away from the benchmark set, through the public command line only.

For each variant of ``picker3d simulate`` (other SNRs, a narrower tilt range, heavy
crowding, one species, inverted contrast) two tomograms are simulated; tomo_00 is the one
annotated tomogram (``picker3d train --minutes M`` with every other option at its default,
so no validation tomogram: the training tomogram chooses the epoch and calibrates the
thresholds), tomo_01 is picked with ``picker3d pick`` and scored with ``picker3d evaluate``.
One JSON line per variant: precision, recall, F1, mean class F1, AP, per-class F1, the kept
epoch and the training seconds. The figures in README (*Model file*, "Ties in calibration")
come from this sweep with ``--minutes 5``.

Usage: python benchmarks/bench_generalization.py [--minutes 5] [--variants snr0.02,barrel,...]
       [--shape 96 256 256] [--out DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from picker3d.engine.formats.mrc import read_volume, write_volume

# name -> (simulate flags, seed, invert contrast)
VARIANTS = {
    "snr0.02": (["--snr", "0.02"], 11, False),
    "snr0.2": (["--snr", "0.2"], 12, False),
    "tilt45": (["--tilt-range", "45"], 13, False),
    "barrel": (["--species", "barrel"], 14, False),
    "crowders300": (["--crowders", "300"], 15, False),
    "inverted": ([], 16, True),
}


def cli(*args, log=None):
    """Run ``python -m picker3d ARGS``; its output goes to ``log`` (a path) when given, and
    the end of it is shown when the command fails."""
    cmd = [sys.executable, "-m", "picker3d", *map(str, args)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log:
        with open(log, "w") as f:
            f.write(done.stdout)
    if done.returncode:
        tail = "\n".join(done.stdout.splitlines()[-5:])
        sys.exit(f"picker3d {args[0]} failed (exit {done.returncode}):\n{tail}")


def run_variant(name, minutes, shape, root):
    flags, seed, invert = VARIANTS[name]
    d = os.path.join(root, name)
    data = os.path.join(d, "data")
    cli("simulate", "--out", data, "--n-tomograms", 2, "--seed", seed, "--shape", *shape, *flags)
    if invert:      # bright particles, as some reconstructions and simulators give them
        for i in (0, 1):
            path = os.path.join(data, f"tomo_{i:02d}.mrc")
            volume, voxel_size = read_volume(path)
            write_volume(path, -volume, voxel_size)
    with open(os.path.join(data, "manifest.json")) as f:
        diameters = ",".join(f"{k}={v}" for k, v in json.load(f)["diameters"].items())
    model, train_log = os.path.join(d, "model.pt"), os.path.join(d, "train.log")
    t0 = time.time()
    cli("train", "--tomograms", os.path.join(data, "tomo_00.mrc"), "--coords", os.path.join(data, "tomo_00.tsv"),
        "--diameters", diameters, "--out", model, "--minutes", minutes, log=train_log)
    train_s = time.time() - t0
    cli("pick", "--model", model, "--tomograms", os.path.join(data, "tomo_01.mrc"), "--out-dir", os.path.join(d, "picks"))
    result = os.path.join(d, "eval.json")
    cli("evaluate", "--pred", os.path.join(d, "picks", "tomo_01.tsv"), "--ref", os.path.join(data, "tomo_01.tsv"),
        "--diameters", diameters, "--out", result)
    with open(result) as f:
        e = json.load(f)
    with open(train_log) as f:
        kept = [line.strip() for line in f if line.startswith("kept")]
    def r(v):
        return round(float(v), 3)
    return {"variant": name, "simulate": flags + (["(inverted)"] if invert else []), "seed": seed,
            "precision": r(e["precision"]), "recall": r(e["recall"]), "f1": r(e["f1"]),
            "mean_class_f1": r(e.get("mean_class_f1") or 0.0), "ap": r(e["ap"]),
            "per_class_f1": {k: round(v["f1"], 2) for k, v in e["per_class"].items()},
            "train_s": round(train_s), "kept": kept[-1] if kept else None}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per variant")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256], metavar=("Z", "Y", "X"))
    p.add_argument("--out", default=None, help="keep the data, models and picks here (default: a temporary folder)")
    a = p.parse_args()
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    with tempfile.TemporaryDirectory() as tmp:
        root = a.out or tmp
        results = []
        for name in names:
            res = run_variant(name, a.minutes, a.shape, root)
            results.append(res)
            print(json.dumps(res), flush=True)
        print(json.dumps({"mean_f1": round(float(np.mean([x["f1"] for x in results])), 3),
                          "mean_class_f1": round(float(np.mean([x["mean_class_f1"] for x in results])), 3)}))


if __name__ == "__main__":
    main()
