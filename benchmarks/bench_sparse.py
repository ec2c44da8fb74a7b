"""Sparse labels as a user has them: a few particles annotated per species, no fully
annotated tomogram for training or validation.

Simulates crowded tomograms (``picker3d simulate`` defaults: five species of 9-25 voxels,
unlabelled crowders, membranes, gold; SNR 0.05): ``--train-tomograms`` to train on, one to
validate on, ``--test-tomograms`` kept aside for measuring only (fully annotated). Of the
training and validation tomograms only ``--per-species`` particles of each species are
annotated. ``--validation sparse`` (default) validates on the sparsely annotated validation
tomogram, ``full`` on the same tomogram fully annotated (what a user rarely has), ``none``
without a validation tomogram. Trains ``--labels sparse`` for ``--minutes`` with
``--expected-particles`` the true count per training tomogram, picks the test tomograms with
the model's thresholds and prints, per seed, localisation F1 (one-to-one within half a
diameter), mean class F1, AP and the epoch kept; then the mean and spread over the seeds.

Usage: python benchmarks/bench_sparse.py [--per-species 2] [--validation sparse|full|none]
       [--minutes 10] [--seeds 0 1 2] [--train-tomograms 1] [--test-tomograms 2] [--train-args "..."]
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np

from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.writers import write_table


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "picker3d", *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"picker3d {args[0]} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def sparse_table(path, per_species, seed, out):
    """``per_species`` randomly chosen particles of each species of the table at ``path``."""
    table = read_table(path)
    rng = np.random.default_rng(seed)
    keep = []
    for c in table.class_names():
        idx = np.flatnonzero(table.classes == c)
        keep += rng.choice(idx, min(per_species, len(idx)), replace=False).tolist()
    write_table(out, table.subset(sorted(keep)))
    return len(table)


def run_seed(a, data, seed, diameters, work):
    n_train = a.train_tomograms
    tomos = [os.path.join(data, f"tomo_{i:02d}.mrc") for i in range(n_train + 1 + a.test_tomograms)]
    full = [t[:-4] + ".tsv" for t in tomos]
    ann = [os.path.join(work, f"sparse_{i:02d}.tsv") for i in range(n_train + 1)]
    counts = [sparse_table(full[i], a.per_species, 1000 * seed + i, ann[i]) for i in range(n_train + 1)]
    val = {"sparse": ["--val-tomograms", tomos[n_train], "--val-coords", ann[n_train]],
           "full": ["--val-tomograms", tomos[n_train], "--val-coords", full[n_train]], "none": []}[a.validation]
    model = os.path.join(work, "model.pt")
    diam = ",".join(f"{k}={v}" for k, v in diameters.items())
    log = cli("train", "--tomograms", *tomos[:n_train], "--coords", *ann[:n_train], *val, "--diameters", diam,
              "--labels", "sparse", "--expected-particles", int(np.mean(counts[:n_train])), "--minutes", a.minutes,
              "--seed", seed, "--out", model, *shlex.split(a.train_args)).stdout
    kept = [ln for ln in log.splitlines() if ln.startswith("kept")]
    picks = os.path.join(work, "picks")
    tests = tomos[n_train + 1:]
    cli("pick", "--model", model, "--tomograms", *tests, "--out-dir", picks)
    preds = [os.path.join(picks, os.path.basename(t)[:-4] + ".tsv") for t in tests]
    ev = json.loads(cli("evaluate", "--pred", *preds, "--ref", *full[n_train + 1:], "--diameters", diam).stdout)
    ev = ev.get("overall", ev)
    return {"seed": seed, "loc_f1": round(ev["f1"], 3), "class_f1": round(ev["mean_class_f1"], 3),
            "ap": round(ev["ap"], 3), "precision": round(ev["precision"], 3), "recall": round(ev["recall"], 3),
            "picks": ev["n_pred"], "particles": ev["n_ref"], "annotated": a.per_species * len(diameters),
            "kept": kept[-1] if kept else ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-species", type=int, default=2)
    ap.add_argument("--validation", default="sparse", choices=("sparse", "full", "none"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-tomograms", type=int, default=1)
    ap.add_argument("--test-tomograms", type=int, default=2)
    ap.add_argument("--data-seed", type=int, default=40)
    ap.add_argument("--out", default=None)
    ap.add_argument("--train-args", default="", help="extra 'picker3d train' options")
    a = ap.parse_args()
    work = a.out or tempfile.mkdtemp(prefix="bench_sparse_")
    data = os.path.join(work, "data")
    n = a.train_tomograms + 1 + a.test_tomograms
    if not os.path.exists(os.path.join(data, "manifest.json")):
        cli("simulate", "--out", data, "--n-tomograms", n, "--seed", a.data_seed)
    with open(os.path.join(data, "manifest.json")) as fh:
        diameters = json.load(fh)["diameters"]
    rows = []
    for seed in a.seeds:
        d = os.path.join(work, f"seed{seed}_{a.validation}_{a.per_species}")
        os.makedirs(d, exist_ok=True)
        rows.append(run_seed(a, data, seed, diameters, d))
        print(json.dumps(rows[-1]), flush=True)
    for key in ("loc_f1", "class_f1", "ap"):
        v = [r[key] for r in rows]
        print(f"{key}: mean {np.mean(v):.3f}, spread {max(v) - min(v):.3f} ({', '.join(f'{x:.3f}' for x in v)})")
    print(f"data {data}")


if __name__ == "__main__":
    main()
