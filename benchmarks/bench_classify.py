"""Classification benchmark: DISCA on simulated sub-tomograms.

For each SNR: simulates ``--per-species`` sub-tomograms of each of the simulator's five
species (random orientation, small shift, ±60° wedge), clusters them with DISCA and
prints the estimated K, homogeneity, completeness, adjusted Rand index, accuracy after
matching and the times (simulation / clustering). With --junk, also clusters picks of
a simulated tomogram that include junk (gold beads, empty ice) and reports
where the junk went.

Usage: python benchmarks/bench_classify.py [--snr 0.1 0.03 0.01] [--per-species 400] [--box 32]
       [--bin 2] [--iterations 10] [--junk]
       [--contrast-weight 3] [--split-separation 3] [--shape-weight 0.6] [--no-merge] [--seed 0]
"""
import argparse
import json
import time

import numpy as np

from picker3d.engine.classification.boxes import extract_subvolumes
from picker3d.engine.classification.disca import classify_boxes
from picker3d.engine.classification.mixture import clustering_scores
from picker3d.engine.options import ClassifyOptions
from picker3d.engine.simulation.dataset import simulate_subtomograms, simulate_tomogram


def _cluster(stack, args):
    """DISCA as ``picker3d classify`` runs it: the clustering, then (unless ``--no-merge``)
    small classes dissolved, classes of one species merged on their aligned averages and
    empty picks split from them."""
    options = ClassifyOptions(bin=args.bin, contrast_weight=args.contrast_weight, split_separation=args.split_separation,
                              k_range=range(args.kmin, args.kmax + 1), iterations=args.iterations, seed=args.seed,
                              pca_dim=args.pca_dim, shape_weight=args.shape_weight, merge=args.merge)
    return classify_boxes(stack, options, log=lambda s: print("   ", s, flush=True))


def run_subtomograms(args, snr):
    t0 = time.time()
    stack, rows = simulate_subtomograms(n_per_species=args.per_species, box=args.box, seed=args.seed,
                                        snr=snr)
    t_sim = time.time() - t0
    truth = [r["class"] for r in rows]
    t0 = time.time()
    res = _cluster(stack, args)
    t_cls = time.time() - t0
    s = clustering_scores(truth, res["labels"])
    print(f"SNR {snr:g}: n={len(stack)} box {args.box} bin {args.bin}: K={res['k']} (true {s['k_true']}) "
          f"homogeneity {s['homogeneity']:.3f} completeness {s['completeness']:.3f} ARI {s['ari']:.3f} "
          f"accuracy {s['accuracy']:.3f} | simulate {t_sim:.0f}s cluster {t_cls:.0f}s", flush=True)
    return dict(s, snr=snr, k=res["k"], seconds=t_cls, n=len(stack))


def run_junk(args):
    """Picks from a simulated tomogram: true particles + gold beads + empty-ice positions."""
    sim = simulate_tomogram(shape=(96, 256, 256), seed=args.seed + 100, snr=0.05, membranes=2, gold=8)
    tomo = sim["tomogram"]
    rows = sim["rows"]
    rng = np.random.default_rng(args.seed)
    xyz = [[r["x"], r["y"], r["z"]] for r in rows]
    truth = [r["class"] for r in rows]
    occ = sim["occupancy"]
    # empty positions: inside the slab, far from any particle
    nz, ny, nx = tomo.shape
    for _ in range(60):
        for _t in range(200):
            p = rng.uniform([8, 8, 30], [nx - 8, ny - 8, nz - 30])
            if occ[int(p[2]), int(p[1]), int(p[0])] == 0:
                xyz.append(p.tolist())
                truth.append("empty")
                break
    # gold beads: the densest blobs of the noise-free density (gold scatters ~6x protein)
    from scipy import ndimage
    dens = sim["density"]
    gold, n_gold = ndimage.label(dens > 0.5 * dens.max())
    for c in ndimage.center_of_mass(gold > 0, gold, range(1, n_gold + 1)):
        xyz.append([c[2], c[1], c[0]])
        truth.append("gold")
    stack, kept, _ = extract_subvolumes(tomo, np.array(xyz), args.box, per_box=False)
    truth = np.array(truth)[kept]
    res = _cluster(stack, args)
    s = clustering_scores(truth, res["labels"])
    labels = res["labels"]
    junk = np.isin(truth, ["empty", "gold"])
    junk_clusters = [c for c in np.unique(labels) if np.mean(junk[labels == c]) > 0.5]
    in_junk = float(np.mean(np.isin(labels[junk], junk_clusters))) if junk.any() else float("nan")
    # what a user loses by discarding the junk-majority classes: the particles of species
    # >= 12 voxels (the 8-voxel species is as faint as empty ice at this SNR, see README)
    diam = {k: v["diameter_vox"] for k, v in sim["manifest"]["species"].items()}
    visible = np.array([diam.get(t, 0) >= 12 for t in truth])
    lost = float(np.mean(np.isin(labels[visible], junk_clusters))) if visible.any() else float("nan")
    sizes = {str(c): {t: int(np.sum((labels == c) & (truth == t))) for t in np.unique(truth)
                      if np.any((labels == c) & (truth == t))} for c in np.unique(labels)}
    print(f"junk run: n={len(stack)} K={res['k']} homogeneity {s['homogeneity']:.3f} "
          f"empty and gold boxes in junk-majority clusters {in_junk:.2f}; particles >= 12 voxels in "
          f"those clusters {lost:.2f}; contents {json.dumps(sizes)}", flush=True)
    return dict(s, junk_in_junk_clusters=in_junk, visible_particles_in_junk_clusters=lost, contents=sizes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snr", type=float, nargs="*", default=[0.1, 0.03, 0.01],
                    help="sub-tomogram sets to run (none: only --junk)")
    ap.add_argument("--per-species", type=int, default=400)
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--bin", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--kmin", type=int, default=2)
    ap.add_argument("--kmax", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pca-dim", type=int, default=8)
    ap.add_argument("--junk", action="store_true")
    ap.add_argument("--shape-weight", type=float, default=0.6)
    ap.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                    help="dissolve small classes and merge classes of one species (default on, as classify)")
    ap.add_argument("--contrast-weight", type=float, default=3.0,
                    help="weight of the box-contrast features (the classify default; 0: shape features only)")
    ap.add_argument("--split-separation", type=float, default=3.0,
                    help="split classes with a bimodal centre density (the classify default; 0: no split)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    results = [run_subtomograms(args, snr) for snr in args.snr]
    if args.junk:
        results.append(run_junk(args))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
