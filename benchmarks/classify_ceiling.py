"""What the rotation-invariant features of picks in context can tell apart: the
supervised ceiling next to unsupervised mixtures, on the boxes ``bench_classify_picks.py``
cuts and on the 2,000-box set of ``bench_classify.py``.

For each set: noise-equalised radial density profiles (``radial_profiles``) and the full
noise-equalised descriptors (``invariant_descriptors(..., equalise=True)``: radial mean and
standard deviation, radial power spectrum), each
- classified *with* the labels — linear discriminant analysis, five-fold cross-validated:
  the homogeneity a clustering of these features could reach if it found the classes
  perfectly (the supervised ceiling);
- clustered without them — PCA to 5 and 8 components, Gaussian mixtures with diagonal, shared
  (tied) and full covariances, K by BIC over 1-12, and with K fixed at the true count.

Usage: python benchmarks/classify_ceiling.py [--per-species 15 50] [--work DIR] [--no-2000]
(the tomograms and picks are ``bench_classify_picks.py``'s, simulated here when missing.)
"""
import argparse
import glob
import math
import os
import sys
import tempfile
import warnings

import numpy as np
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from picker3d.engine.classification.boxes import extract_subvolumes
from picker3d.engine.classification.descriptors import invariant_descriptors, radial_profiles, shape_features
from picker3d.engine.classification.mixture import clustering_scores
from picker3d.engine.formats.mrc import read_volume
from picker3d.engine.formats.readers import read_table
from picker3d.engine.simulation.dataset import simulate_subtomograms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_classify_picks  # noqa: E402


def picks_in_context(work, per_species, box=38):
    """The boxes (tomogram units) and truth of ``bench_classify_picks.py``'s picks, no junk
    (its tomograms and pick files are made when missing)."""
    pattern = os.path.join(work, "sim_seed0_*_snr0.05_vs7", f"picks_{per_species}_0_tomo_*.tsv")
    if not glob.glob(pattern):
        folder, man = bench_classify_picks.simulate(work, math.ceil(per_species / bench_classify_picks.PER_TOMOGRAM),
                                                    0, 0.05, 7.0)
        bench_classify_picks.picks(folder, man, per_species, 0.0, np.random.default_rng(7))
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no picks_{per_species}_0_*.tsv under {work}: run bench_classify_picks.py first")
    stacks, truth = [], []
    for f in files:
        table = read_table(f)
        vol, _ = read_volume(os.path.join(os.path.dirname(f), os.path.basename(f).split("_", 3)[3].replace(".tsv", ".mrc")))
        stack, kept, _ = extract_subvolumes(vol, table.xyz, box, per_box=False)
        stacks.append(stack)
        truth += list(np.asarray(table.extra["truth"])[kept])
    return np.concatenate(stacks), np.asarray(truth)


def mixture(Z, covariance, k_values):
    best = None
    for k in k_values:
        try:
            g = GaussianMixture(k, covariance_type=covariance, n_init=3, random_state=0, reg_covar=1e-3).fit(Z)
        except ValueError:          # a component collapsed: more classes than the data hold
            break
        if best is None or g.bic(Z) < best[0]:
            best = (g.bic(Z), g)
    return best[1].predict(Z)


def report(name, stack, truth):
    k_true = len(np.unique(truth))
    profiles, shapes = radial_profiles(stack), shape_features(stack)
    for feature, values in (("radial profiles", profiles),
                            ("all descriptors", invariant_descriptors(stack, equalise=True)),
                            ("shape features", shapes),
                            ("radial profiles + shape features", np.concatenate([profiles, shapes], 1))):
        lda = make_pipeline(StandardScaler(), PCA(min(20, values.shape[1])), LinearDiscriminantAnalysis())
        pred = cross_val_predict(lda, values, truth, cv=StratifiedKFold(5, shuffle=True, random_state=0))
        s = clustering_scores(truth, pred)
        print(f"{name}, {feature}: supervised (LDA, 5-fold) accuracy {s['accuracy']:.3f} homogeneity "
              f"{s['homogeneity']:.3f}", flush=True)
        for dim in (5, 8):
            Z = PCA(dim, random_state=0).fit_transform(values - values.mean(axis=0))
            cells = []
            for cov in ("diag", "tied", "full"):
                by_bic = clustering_scores(truth, mixture(Z, cov, range(1, 13)))
                fixed = clustering_scores(truth, mixture(Z, cov, [k_true]))
                cells.append(f"{cov}: BIC K={by_bic['k_found']} hom {by_bic['homogeneity']:.2f}, "
                             f"K={k_true} hom {fixed['homogeneity']:.2f}")
            print(f"    unsupervised, PCA {dim}: " + " | ".join(cells), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-species", type=int, nargs="+", default=[15, 50])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "picker3d_bench_classify_picks"))
    ap.add_argument("--no-2000", action="store_true", help="skip the 2,000-box set")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    for n in args.per_species:
        stack, truth = picks_in_context(args.work, n)
        report(f"picks in context, {n} per species ({len(truth)})", stack, truth)
    if not args.no_2000:
        stack, rows = simulate_subtomograms(400, box=32, seed=0, snr=0.03)
        report("2,000 sub-tomograms, SNR 0.03", stack, np.asarray([r["class"] for r in rows]))


if __name__ == "__main__":
    main()
