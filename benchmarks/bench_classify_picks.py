"""Classification of picks in context: boxes cut at particle positions of crowded
simulated tomograms, species of very different sizes, a box sized for the largest, with and
without junk picks — what ``picker3d classify`` sees after a picking session.

The simulator at 7 Å/voxel makes its five species 11-36 voxels across (tiny 11, shell 17,
barrel 24, rod 34 x 9, large 36: 3.3x), among unlabelled crowders (6-22 voxels at 10 Å),
membranes, vesicles and gold, SNR 0.05, ±60° wedge; each 96x256x256 tomogram holds 15 copies
of every species. For each ``--per-species`` N, ceil(N / 15) tomograms are simulated and
classified together through the command line (``picker3d classify --tomograms ... --coords
...``, one clustering over every pick). With ``--junk F``, F x the number of particles
further picks go at random places of the ice slab at least a radius of the largest species
away from every particle (empty ice, crowders, membrane, gold: what a picker's false
positives hit). Prints K, homogeneity, completeness, ARI (junk counts as one more class),
each class's size and purity, where the junk went, the per-class FSC resolution and the time.

With ``--alignment``, first the alignment benchmark (``run_alignment``).

Usage: python benchmarks/bench_classify_picks.py [--per-species 15 50 100] [--junk 0 0.2]
       [--seed 0] [--snr 0.05] [--voxel-size 7] [--box auto] [--work DIR] [--alignment]
       [extra classify flags...]
"""
import argparse
import json
import math
import os
import tempfile
import time

import numpy as np

from picker3d.engine.classification.mixture import clustering_scores
from picker3d.engine.cli import main as cli
from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.table import CoordTable
from picker3d.engine.formats.writers import write_table
from picker3d.engine.simulation.dataset import write_simulation

PER_TOMOGRAM = 15


def simulate(work, n_tomograms, seed, snr, voxel_size):
    """Tomograms with 15 of every species (cached in ``work``); returns the manifest."""
    folder = os.path.join(work, f"sim_seed{seed}_n{n_tomograms}_snr{snr:g}_vs{voxel_size:g}")
    man_path = os.path.join(folder, "manifest.json")
    if not os.path.exists(man_path):
        counts = {s: PER_TOMOGRAM for s in ("large", "barrel", "shell", "rod", "tiny")}
        write_simulation(folder, n_tomograms=n_tomograms, seed=seed, snr=snr, voxel_size=voxel_size,
                         counts=counts)
    with open(man_path) as fh:
        return folder, json.load(fh)


def picks(folder, man, per_species, junk, rng):
    """Coordinate files with a ``truth`` column: the first ``per_species`` particles of every
    species over the tomograms, and the junk picks."""
    files, left = [], {s: per_species for s in man["diameters"]}
    radius = max(man["diameters"].values()) / 2
    for t in man["tomograms"]:
        ref = read_table(os.path.join(folder, t["coords"]))
        keep = []
        for i, c in enumerate(ref.classes):
            if left[c] > 0:
                keep.append(i)
                left[c] -= 1
        if not keep:
            continue
        xyz, truth = ref.xyz[keep], list(ref.classes[keep])
        n_junk = int(round(junk * len(keep)))
        shape = t["shape_zyx"]
        junk_xyz = []
        while len(junk_xyz) < n_junk:
            p = rng.uniform([radius, radius, 0.2 * shape[0]], [shape[2] - radius, shape[1] - radius, 0.8 * shape[0]])
            if np.min(np.linalg.norm(ref.xyz - p, axis=1)) >= radius:
                junk_xyz.append(p)
        if junk_xyz:
            xyz = np.concatenate([xyz, np.array(junk_xyz)])
            truth += ["junk"] * len(junk_xyz)
        path = os.path.join(folder, f"picks_{per_species}_{junk:g}_{t['name']}.tsv")
        write_table(path, CoordTable(xyz, extra={"truth": np.asarray(truth, dtype=object)}))
        files.append((os.path.join(folder, t["tomogram"]), path))
    return files


def score(table, diameters):
    truth, labels = np.asarray(table.extra["truth"]), np.asarray(table.extra["cluster"]).astype(int)
    s = clustering_scores(truth, labels)
    classes = {}
    for c in np.unique(labels):
        members = truth[labels == c]
        names, counts = np.unique(members, return_counts=True)
        classes[int(c)] = {"size": int(len(members)), "majority": str(names[np.argmax(counts)]),
                           "purity": round(float(counts.max() / len(members)), 3),
                           "contents": {str(n): int(k) for n, k in zip(names, counts)}}
    junk = truth == "junk"
    junk_classes = [c for c, v in classes.items() if v["majority"] == "junk"]
    s["junk_in_junk_classes"] = float(np.mean(np.isin(labels[junk], junk_classes))) if junk.any() else None
    big = np.array([diameters.get(t, 0) >= 12 for t in truth])
    s["particles_ge12_in_junk_classes"] = float(np.mean(np.isin(labels[big], junk_classes))) if big.any() else None
    particles = ~junk
    s["homogeneity_particles"] = clustering_scores(truth[particles], labels[particles])["homogeneity"]
    return s, classes


def run(args, per_species, junk, extra):
    n_tomo = math.ceil(per_species / PER_TOMOGRAM)
    folder, man = simulate(args.work, n_tomo, args.seed, args.snr, args.voxel_size)
    diameters = man["diameters"]
    box = args.box or 2 * int(math.ceil((max(diameters.values()) + 4) / 2))
    files = picks(folder, man, per_species, junk, np.random.default_rng(args.seed + 7))
    out = os.path.join(folder, f"classes_{per_species}_{junk:g}.tsv")
    t0 = time.time()
    rc = cli(["classify", "--tomograms", *[f[0] for f in files], "--coords", *[f[1] for f in files],
              "--box", str(box), "--out", out, "--seed", str(args.seed), *extra])
    seconds = time.time() - t0
    if rc != 0:
        raise SystemExit(f"classify failed ({rc})")
    table = read_table(out)
    s, classes = score(table, diameters)
    with open(os.path.splitext(out)[0] + "_disca.json") as fh:
        info = json.load(fh)
    true_k = len(diameters) + (1 if junk else 0)
    print(f"\n{per_species} per species, junk {junk:g} ({len(table)} picks, {n_tomo} tomograms, box {box}): "
          f"K={s['k_found']} (true {true_k}) homogeneity {s['homogeneity']:.3f} (particles only "
          f"{s['homogeneity_particles']:.3f}) completeness {s['completeness']:.3f} ARI {s['ari']:.3f} "
          f"| {seconds:.0f} s", flush=True)
    if junk:
        print(f"  junk in junk-majority classes {s['junk_in_junk_classes']:.2f}; particles >= 12 voxels there "
              f"{s['particles_ge12_in_junk_classes']:.2f}")
    res = {str(r["class"]): r for r in info.get("resolution", [])}
    for c, v in sorted(classes.items()):
        r = res.get(str(c), {})
        fsc = f"  FSC 0.143 {r['fsc_0143_A']:.0f} Å, 0.5 {r['fsc_05_A']:.0f} Å" if r else ""
        print(f"  class {c}: {v['size']} picks, {v['majority']} {v['purity']:.2f}  {v['contents']}{fsc}")
    return dict(s, per_species=per_species, junk=junk, seconds=round(seconds, 1), classes=classes, box=box)


def run_alignment(args):
    """100 boxes of the asymmetric ``large`` species in random orientations (SNR 0.05, box 32,
    10 Å/voxel): the aligned average's correlation with the true density, beside the plain
    average's and that of the average with the true orientations (the ceiling these data
    allow: the CTF and the wedge are in every box), and the time."""
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    from picker3d.engine.classification.alignment import (
        align_class,
        correlation_with,
        fsc,
        fsc_weighted,
        soft_sphere,
        wedge_mask,
        wedge_weighted_average,
    )
    from picker3d.engine.simulation.dataset import simulate_subtomograms
    from picker3d.engine.simulation.scene import _splat
    from picker3d.engine.simulation.species import ATOM_SIGMA, build_species
    box, n = 32, args.align_boxes
    stack, rows = simulate_subtomograms(n, box=box, seed=args.seed + 3, snr=args.snr, species=["large"])
    atoms = build_species("large").atoms
    truth = -ndimage.gaussian_filter(_splat((box,) * 3, atoms[:, ::-1] + (box - 1) / 2, np.ones(len(atoms))),
                                     ATOM_SIGMA)          # particles are dark in a tomogram
    t0 = time.time()
    res = align_class(stack, tilt_range=60, voxel_size=10.0, seed=args.seed)
    seconds = time.time() - t0
    true_R = Rotation.from_euler("ZYZ", [[r["rot"], r["tilt"], r["psi"]] for r in rows], degrees=True).as_matrix()
    true_t = np.array([[r["dx"], r["dy"], r["dz"]] for r in rows])
    # the ceiling, made as the aligned average is: the halves' FSC weighting the full average
    wedge, halves = wedge_mask(box, 60), np.random.default_rng(args.seed).permutation(n)
    h1, h2 = halves[: n // 2], halves[n // 2:]
    curve = fsc(*[wedge_weighted_average(stack[h], true_R[h], true_t[h], wedge)[0] * soft_sphere(box) for h in (h1, h2)])
    oracle = fsc_weighted(wedge_weighted_average(stack, true_R, true_t, wedge)[0], curve)
    common = Rotation.from_matrix(true_R).inv() * Rotation.from_matrix(res["matrices"])
    spread = np.degrees((common * common.mean().inv()).magnitude())
    print(f"\nalignment: {n} boxes of 'large' at SNR {args.snr:g}, {box}^3: correlation with the true density "
          f"aligned {correlation_with(res['average'], truth):.3f}, unaligned {correlation_with(stack.mean(0), truth):.3f}, "
          f"true orientations {correlation_with(oracle, truth):.3f}; rotation error median {np.median(spread):.1f} deg "
          f"({np.mean(spread < 20):.2f} within 20); FSC 0.143 {res['resolution_0143']:.0f} Å, 0.5 "
          f"{res['resolution_05']:.0f} Å | {seconds:.0f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-species", type=int, nargs="+", default=[15, 50, 100])
    ap.add_argument("--junk", type=float, nargs="+", default=[0.0, 0.2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--snr", type=float, default=0.05)
    ap.add_argument("--voxel-size", type=float, default=7.0)
    ap.add_argument("--box", type=int, default=None, help="default: the largest diameter + 4, even")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "picker3d_bench_classify_picks"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--alignment", action="store_true", help="also run the alignment benchmark")
    ap.add_argument("--align-boxes", type=int, default=100)
    args, extra = ap.parse_known_args()
    os.makedirs(args.work, exist_ok=True)
    if args.alignment:
        run_alignment(args)
    results = [run(args, n, j, extra) for n in args.per_species for j in args.junk]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
