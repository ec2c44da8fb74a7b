"""DISCA variants (engine keywords as JSON) on the picks bench_classify_picks.py cut.

Usage: python benchmarks/classify_variants.py FOLDER PER_SPECIES JUNK '{"covariance": "diag"}' ...
"""
import numpy as np, json, glob, sys, time
from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.mrc import read_volume
from picker3d.engine.classification.boxes import extract_subvolumes
from picker3d.engine.classification.disca import disca_on_boxes
from picker3d.engine.classification.mixture import clustering_scores
folder, n, junk = sys.argv[1], sys.argv[2], sys.argv[3]
stacks, truth = [], []
for f in sorted(glob.glob(f"{folder}/picks_{n}_{junk}_tomo_*.tsv")):
    t = read_table(f); vol, _ = read_volume(f.replace(f"picks_{n}_{junk}_", "").replace(".tsv", ".mrc"))
    s, kept, _ = extract_subvolumes(vol, t.xyz, 38, per_box=False); stacks.append(s); truth += list(np.asarray(t.extra["truth"])[kept])
stack = np.concatenate(stacks); truth = np.array(truth)
for spec in sys.argv[4:]:
    kw = json.loads(spec)
    t0 = time.time()
    res = disca_on_boxes(stack, kw.pop("binning", 2), kw.pop("contrast_weight", 3.0), kw.pop("split_separation", 3.0),
                         log=lambda m: None, **kw)
    s = clustering_scores(truth, res["labels"])
    jk = truth == "junk"
    lab = res["labels"]
    jc = [c for c in np.unique(lab) if np.mean(jk[lab == c]) > 0.5]
    extra = f" junk->junk {np.mean(np.isin(lab[jk], jc)):.2f} big->junk {np.mean(np.isin(lab[(~jk) & (truth != 'tiny')], jc)):.2f}" if jk.any() else ""
    print(spec, f"K={s['k_found']} hom {s['homogeneity']:.3f} compl {s['completeness']:.3f} ari {s['ari']:.3f}{extra} {time.time()-t0:.0f}s", flush=True)
