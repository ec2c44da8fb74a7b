"""A trained model on one held-out tomogram delivered the ways real tomograms arrive.

Three crowded tomograms are simulated (``picker3d simulate``, default species and
distractors); unless ``--model`` is given, a model is trained on tomo_00 with tomo_01 as
validation (``picker3d train --minutes M``). tomo_02 is then picked clean and in each variant
(a thickness gradient of ±0.5 and ±1.5 σ across x, a carbon edge over 15 % of y, ice
contamination, flipped contrast, resampled to 8 and 13.5 Å/voxel, 60 planes of empty ice above
and below) with ``picker3d pick`` at its defaults, and scored with ``picker3d evaluate``
(matching within half a diameter, diameters in the variant's voxels). A variant the pick
command refuses with a line naming ``--invert`` is picked again with it. Prints one row per
variant: F1, its difference to the clean tomogram, the number of picks, and for the empty-ice
variant the picks outside the specimen.

Usage: python benchmarks/bench_artefacts.py [--minutes 10] [--model MODEL.pt] [--seed 21]
       [--shape 96 256 256] [--out DIR] [--train-args "..."]
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

from picker3d.engine.formats.mrc import read_volume, write_volume
from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.writers import write_table
from picker3d.engine.simulation import artefacts

EMPTY_PLANES = 60


def cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "picker3d", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode:
        sys.exit(f"picker3d {args[0]} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def variants(volume, table, vs):
    """{name: (volume, table, voxel size, number of empty planes)}."""
    out = {"clean": (volume, table, vs, 0),
           "gradient 0.5": (artefacts.thickness_gradient(volume, 0.5), table, vs, 0),
           "gradient 1.5": (artefacts.thickness_gradient(volume, 1.5), table, vs, 0),
           "carbon edge 15 %": (artefacts.carbon_edge(volume, 0.15), table, vs, 0),
           "ice contamination": (artefacts.ice_contamination(volume, 8), table, vs, 0),
           "inverted": (artefacts.inverted(volume), table, vs, 0)}
    for new in (8.0, 13.5):
        v, t = artefacts.resampled(volume, table, vs, new)
        out[f"{new:g} A/voxel"] = (v, t, new, 0)
    v, t = artefacts.empty_ice(volume, table, EMPTY_PLANES)
    out[f"empty ice {EMPTY_PLANES} planes"] = (v, t, vs, EMPTY_PLANES)
    return out


def score(name, vol, ref, vs, model, diameters, work):
    d = os.path.join(work, name.replace(" ", "_").replace("/", "_").replace("%", "pc"))
    os.makedirs(d, exist_ok=True)
    write_volume(os.path.join(d, "tomo.mrc"), vol, vs)
    write_table(os.path.join(d, "ref.tsv"), ref)
    r = cli("pick", "--model", model, "--tomograms", os.path.join(d, "tomo.mrc"), "--out-dir", d, check=False)
    refused = r.returncode == 2 and "--invert" in r.stderr
    if refused:
        r = cli("pick", "--model", model, "--tomograms", os.path.join(d, "tomo.mrc"), "--out-dir", d, "--invert",
                check=False)
    if r.returncode:
        return {"variant": name, "error": r.stderr.strip()[-300:]}
    scale = 10.0 / vs
    diam = ",".join(f"{k}={v * scale:g}" for k, v in diameters.items())
    ev = json.loads(cli("evaluate", "--pred", os.path.join(d, "tomo.tsv"), "--ref", os.path.join(d, "ref.tsv"),
                        "--diameters", diam).stdout)
    return {"variant": name, "f1": round(ev["f1"], 3), "precision": round(ev["precision"], 3),
            "recall": round(ev["recall"], 3), "picks": ev["n_pred"], "particles": ev["n_ref"],
            "refused_then_inverted": refused, "log": [ln for ln in r.stdout.splitlines() + r.stderr.splitlines()
                                                      if "warning" in ln.lower() or "invert" in ln.lower()
                                                      or "slab" in ln.lower() or "resampl" in ln.lower()][:3]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--model", default=None, help="a trained model (default: train one)")
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256])
    ap.add_argument("--out", default=None)
    ap.add_argument("--train-args", default="", help="extra 'picker3d train' options")
    a = ap.parse_args()
    work = a.out or tempfile.mkdtemp(prefix="bench_artefacts_")
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        cli("simulate", "--out", data, "--n-tomograms", 3, "--seed", a.seed, "--shape", *a.shape)
    with open(os.path.join(data, "manifest.json")) as fh:
        diameters = json.load(fh)["diameters"]
    model = a.model
    if not model:
        model = os.path.join(work, "model.pt")
        diam = ",".join(f"{k}={v}" for k, v in diameters.items())
        cli("train", "--tomograms", os.path.join(data, "tomo_00.mrc"), "--coords", os.path.join(data, "tomo_00.tsv"),
            "--val-tomograms", os.path.join(data, "tomo_01.mrc"), "--val-coords", os.path.join(data, "tomo_01.tsv"),
            "--diameters", diam, "--minutes", a.minutes, "--out", model, "--seed", a.seed,
            *shlex.split(a.train_args))
    volume, vs = read_volume(os.path.join(data, "tomo_02.mrc"))
    table = read_table(os.path.join(data, "tomo_02.tsv"))
    rows = []
    for name, (vol, ref, v, planes) in variants(volume, table, vs).items():
        row = score(name, vol, ref, v, model, diameters, work)
        if planes and "f1" in row:
            picks = read_table(os.path.join(work, name.replace(" ", "_"), "tomo.tsv"), allow_empty=True)
            z = picks.xyz[:, 2]
            row["picks_in_empty_ice"] = int(((z < planes) | (z >= planes + volume.shape[0])).sum())
        rows.append(row)
        print(json.dumps(row), flush=True)
    clean = rows[0].get("f1", 0.0)
    print(f"\n{'variant':24s} {'F1':>6s} {'ΔF1':>6s} {'picks':>6s}  notes")
    for r in rows:
        if "f1" not in r:
            print(f"{r['variant']:24s} error: {r['error']}")
            continue
        notes = ("refused, then --invert; " if r["refused_then_inverted"] else "") + \
                (f"{r['picks_in_empty_ice']} picks in empty ice" if "picks_in_empty_ice" in r else "")
        print(f"{r['variant']:24s} {r['f1']:6.3f} {r['f1'] - clean:+6.3f} {r['picks']:6d}  {notes}")
    print(f"\nmodel {model}; data {data}")


if __name__ == "__main__":
    main()
