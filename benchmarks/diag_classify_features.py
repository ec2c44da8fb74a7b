"""Why species of different sizes merge (issue 27): radial profiles per species and simple
mixtures on the picks that benchmarks/bench_classify_picks.py cut (run it first).

Usage: python benchmarks/diag_classify_features.py /tmp/picker3d_bench_classify_picks/sim_seed0_n1_snr0.05_vs7 15
"""
import numpy as np, json, glob, sys
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.mrc import read_volume
from picker3d.engine.classification.boxes import bin_boxes, extract_subvolumes, normalize_box
from picker3d.engine.classification.descriptors import invariant_descriptors, _project
from picker3d.engine.classification.mixture import clustering_scores
folder = sys.argv[1]; n = sys.argv[2] if len(sys.argv) > 2 else "15"
man = json.load(open(folder + "/manifest.json"))
stacks, truth = [], []
for f in sorted(glob.glob(f"{folder}/picks_{n}_0_tomo_*.tsv")):
    t = read_table(f); vol, _ = read_volume(f.replace(f"picks_{n}_0_", "").replace(".tsv", ".mrc"))
    s, kept, _ = extract_subvolumes(vol, t.xyz, 38, per_box=False); stacks.append(s); truth += list(np.asarray(t.extra["truth"])[kept])
stack = np.concatenate(stacks); truth = np.array(truth)
b2 = bin_boxes(stack, 2)
def gmm(Z, cov="diag"):
    best = None
    for k in range(2, 12):
        g = GaussianMixture(k, covariance_type=cov, reg_covar=1e-3, n_init=3, random_state=0).fit(Z)
        if best is None or g.bic(Z) < best[0]: best = (g.bic(Z), g)
    lab = best[1].predict(Z); s = clustering_scores(truth, lab); return s["k_found"], round(s["homogeneity"], 3)
def radial(st):
    b = st.shape[1]; c = (b - 1) / 2
    r = np.rint(np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(b) - c] * 3, indexing="ij")))).astype(int)
    r = np.minimum(r, b // 2)
    return np.stack([np.bincount(r.ravel(), x.ravel()) / np.bincount(r.ravel()) for x in st])
for name, st in (("tomogram units", b2), ("per-box normalised", normalize_box(b2))):
    rp = radial(st)
    print(name, "radial mean profile by species (first 10 shells):")
    for sp in sorted(set(truth)):
        print(f"   {sp:7s}", np.round(rp[truth == sp].mean(0)[:10], 2), "+-", np.round(rp[truth == sp].std(0)[:4], 2))
    for dim in (2, 5):
        Zs = PCA(dim).fit_transform(rp)
        print(f"  radial profile alone, PCA {dim} (not whitened): diag", gmm(Zs), "full", gmm(Zs, "full"))
        Zw = _project(rp, dim, 0)
        print(f"  radial profile alone, standardised+whitened PCA {dim}: diag", gmm(Zw), "full", gmm(Zw, "full"))
    d = invariant_descriptors(st)
    for dim in (2, 5, 8):
        Z = _project(d, dim, 0)
        print(f"  picker3d descriptors ({d.shape[1]} cols), standardised+whitened PCA {dim}: diag", gmm(Z), "full", gmm(Z, "full"))
    Z = PCA(5).fit_transform(d - d.mean(0))
    print("  picker3d descriptors, PCA 5 unstandardised: diag", gmm(Z), "full", gmm(Z, "full"))
print("---- noise-equalised radial profiles (profile x sqrt(voxels per shell))")
for binning in (1, 2):
    st = bin_boxes(stack, binning) if binning > 1 else stack
    b = st.shape[1]; c = (b - 1) / 2
    r = np.rint(np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(b) - c] * 3, indexing="ij")))).astype(int)
    r = np.minimum(r, b // 2); cnt = np.bincount(r.ravel()); ok = cnt > 0
    rp = np.stack([np.bincount(r.ravel(), x.ravel())[ok] / cnt[ok] for x in st])
    sd = np.stack([np.sqrt(np.maximum(np.bincount(r.ravel(), (x**2).ravel())[ok] / cnt[ok] - p**2, 0)) for x, p in zip(st, rp)])
    for units, P, S in (("tomogram", rp, sd),):
        w = np.sqrt(cnt[ok])
        for feats_name, Fm in (("mean", P * w), ("mean+std", np.c_[P * w, S * w])):
            for dim in (3, 5, 8):
                Z = PCA(dim).fit_transform(Fm - Fm.mean(0))
                Zw = PCA(dim, whiten=True).fit_transform(Fm - Fm.mean(0))
                print(f"bin {binning} {feats_name} PCA {dim}: diag", gmm(Z), "full", gmm(Z, "full"), "| whitened diag", gmm(Zw), "full", gmm(Zw, "full"))
