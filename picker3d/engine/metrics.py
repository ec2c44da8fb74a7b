"""Picking evaluation: one-to-one matching, precision/recall/F1, AP, CZII F-beta, SHREC hits.

Matching radius: ``radius_frac × diameter`` of the reference particle's class (default
0.5, i.e. the particle radius, as DeepETPicker and SHREC'21 count a hit inside the
particle), or a fixed ``radius`` in voxels. One-to-one assignment with the Hungarian
algorithm on the candidate pairs, so duplicated predictions are false positives.

AP follows the detection convention: predictions in decreasing score, each matched to
the nearest still-free reference within its radius; AP is the area under the
interpolated precision-recall curve (DeepETPicker, §A.9 evaluates pickers by such curves).

CZII F-beta (CryoET Object Identification challenge): beta = 4, a prediction matches a
reference of its class within 0.5 × the particle radius (= 0.25 × diameter).

:func:`matched_filter_dprime` bounds what any picker can find in simulated data (d' of an
oracle matched filter per particle; ``benchmarks/bench_detectability.py``).
"""
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from .formats.table import CoordTable, diameter_of


def reference_radii(ref, diameters, radius_frac=0.5, radius=None):
    """Matching radius of each reference particle: ``radius`` voxels, or ``radius_frac`` x
    the diameter of its class."""
    if radius is not None:
        return np.full(len(ref), float(radius))
    names = ref.classes if ref.classes is not None else ["*"] * len(ref)
    return np.array([diameter_of(diameters, n) * radius_frac for n in names], dtype=float)


def match(pred_xyz, ref_xyz, ref_radii):
    """Hungarian one-to-one matching within each reference's radius.

    Returns ``(pairs, distances)``: pairs is ``(k, 2)`` of (pred index, ref index).
    """
    if len(pred_xyz) == 0 or len(ref_xyz) == 0:
        return np.zeros((0, 2), dtype=int), np.zeros(0)
    rmax = float(np.max(ref_radii))
    tree = cKDTree(ref_xyz)
    cand = tree.query_ball_point(pred_xyz, r=rmax)
    rows, cols, dists = [], [], []
    for i, js in enumerate(cand):
        for j in js:
            d = float(np.linalg.norm(pred_xyz[i] - ref_xyz[j]))
            if d <= ref_radii[j]:
                rows.append(i)
                cols.append(j)
                dists.append(d)
    if not rows:
        return np.zeros((0, 2), dtype=int), np.zeros(0)
    ur, ri = np.unique(rows, return_inverse=True)
    uc, ci = np.unique(cols, return_inverse=True)
    big = 1e6
    cost = np.full((len(ur), len(uc)), big)
    cost[ri, ci] = dists
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < big
    pairs = np.stack([ur[r[ok]], uc[c[ok]]], axis=1)
    return pairs, cost[r[ok], c[ok]]


def match_by_class(pred, ref, ref_radii):
    """Class-aware one-to-one matching: a prediction can only match a reference of its own
    class. Returns boolean masks ``(pred_hit, ref_hit)`` (true positives, found references)."""
    pred_hit = np.zeros(len(pred), dtype=bool)
    ref_hit = np.zeros(len(ref), dtype=bool)
    for name in sorted(set(ref.class_names()) | set(pred.class_names())):
        pi = np.where(pred.classes == name)[0] if len(pred) else np.zeros(0, dtype=int)
        ri = np.where(ref.classes == name)[0] if len(ref) else np.zeros(0, dtype=int)
        pairs, _ = match(pred.xyz[pi], ref.xyz[ri], ref_radii[ri])
        pred_hit[pi[pairs[:, 0]]] = True
        ref_hit[ri[pairs[:, 1]]] = True
    return pred_hit, ref_hit


def _prf(tp, n_pred, n_ref):
    p = tp / n_pred if n_pred else (1.0 if n_ref == 0 else 0.0)
    r = tp / n_ref if n_ref else (1.0 if n_pred == 0 else 0.0)
    f = 2 * p * r / (p + r) if (p + r) else 0.0
    return p, r, f


def precision_recall_curve(pred_xyz, scores, ref_xyz, ref_radii):
    """Greedy matching in decreasing score; returns (thresholds, precision, recall, AP)."""
    n_ref = len(ref_xyz)
    if len(pred_xyz) == 0 or n_ref == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0), 0.0
    order = np.argsort(-scores, kind="stable")
    tree = cKDTree(ref_xyz)
    taken = np.zeros(n_ref, dtype=bool)
    tp = np.zeros(len(order))
    rmax = float(np.max(ref_radii))
    for k, i in enumerate(order):
        js = tree.query_ball_point(pred_xyz[i], r=rmax)
        best, bd = -1, np.inf
        for j in js:
            d = np.linalg.norm(pred_xyz[i] - ref_xyz[j])
            if not taken[j] and d <= ref_radii[j] and d < bd:
                best, bd = j, d
        if best >= 0:
            taken[best] = True
            tp[k] = 1
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(tp) + 1)
    recall = ctp / n_ref
    # interpolated precision (monotone envelope), area by recall steps
    env = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    ap = float(np.sum(steps * env))
    return scores[order], precision, recall, ap


def evaluate(pred, ref, diameters=None, radius_frac=0.5, radius=None, occupancy=None,
             beta=4.0, curve_points=50):
    """All picking figures for a prediction table against a reference table (dict, JSON-ready)."""
    diameters = diameters or {}
    ref_r = reference_radii(ref, diameters, radius_frac, radius)
    out = {"n_pred": len(pred), "n_ref": len(ref),
           "radius": None if radius is None else float(radius), "radius_frac": radius_frac}

    # class-agnostic localisation
    pairs, dists = match(pred.xyz, ref.xyz, ref_r)
    p, r, f = _prf(len(pairs), len(pred), len(ref))
    out.update(precision=p, recall=r, f1=f, tp=int(len(pairs)), fp=int(len(pred) - len(pairs)),
               fn=int(len(ref) - len(pairs)), mean_distance=float(dists.mean()) if len(dists) else None)

    scores = pred.scores if pred.scores is not None else np.ones(len(pred))
    thr, prec, rec, ap = precision_recall_curve(pred.xyz, scores, ref.xyz, ref_r)
    out["ap"] = ap
    if len(thr):
        pick = np.unique(np.linspace(0, len(thr) - 1, min(curve_points, len(thr))).astype(int))
        out["pr_curve"] = [{"threshold": float(thr[i]), "precision": float(prec[i]), "recall": float(rec[i])}
                           for i in pick]
    else:
        out["pr_curve"] = []

    # class-aware matching (the same function the evaluate protocol uses for its output sets)
    if ref.classes is not None and pred.classes is not None:
        per = {}
        czii_tp = czii_fp = czii_fn = 0
        pred_hit, ref_hit = match_by_class(pred, ref, ref_r)
        ctp = int(pred_hit.sum())
        cp, cr, cf = _prf(ctp, len(pred), len(ref))
        out["class_aware"] = {"precision": cp, "recall": cr, "f1": cf, "tp": ctp, "fp": int(len(pred) - ctp),
                              "fn": int(len(ref) - ref_hit.sum())}
        for name in sorted(set(ref.class_names()) | set(pred.class_names())):
            pi = np.where(pred.classes == name)[0]
            ri = np.where(ref.classes == name)[0]
            cp, cr, cf = _prf(int(pred_hit[pi].sum()), len(pi), len(ri))
            per[name] = {"precision": cp, "recall": cr, "f1": cf, "n_pred": int(len(pi)), "n_ref": int(len(ri))}
            if len(ri):
                cz_r = np.full(len(ri), 0.25 * diameter_of(diameters, name)) if (diameters and radius is None) \
                    else ref_r[ri] * 0.5
                cz_pairs, _ = match(pred.xyz[pi], ref.xyz[ri], cz_r)
                czii_tp += len(cz_pairs)
                czii_fp += len(pi) - len(cz_pairs)
                czii_fn += len(ri) - len(cz_pairs)
            else:
                czii_fp += len(pi)
        out["per_class"] = per
        ref_names = ref.class_names()
        out["mean_class_f1"] = float(np.mean([per[n]["f1"] for n in ref_names])) if ref_names else None
    else:
        pz, _ = match(pred.xyz, ref.xyz, ref_r * 0.5)
        czii_tp, czii_fp, czii_fn = len(pz), len(pred) - len(pz), len(ref) - len(pz)
    b2 = beta * beta
    denom = (1 + b2) * czii_tp + b2 * czii_fn + czii_fp
    out["czii_fbeta"] = float((1 + b2) * czii_tp / denom) if denom else 1.0
    out["czii_beta"] = beta

    if occupancy is not None:
        out["shrec"] = shrec_hits(pred, ref, occupancy)
    return out


def pooled_table(tables, offset):
    """One table from several tomograms' tables, the i-th shifted by ``i * offset`` along x so
    that no match crosses between tomograms (class-less tables count as one class, score-less
    ones score 1)."""
    if not tables:
        return CoordTable(np.zeros((0, 3)), [], [])
    xyz = np.concatenate([np.asarray(t.xyz, float).reshape(-1, 3) + [i * offset, 0, 0] for i, t in enumerate(tables)])
    classes = np.concatenate([t.classes if t.classes is not None else np.asarray(["particle"] * len(t), object)
                              for t in tables])
    scores = np.concatenate([t.scores if t.scores is not None else np.ones(len(t)) for t in tables])
    return CoordTable(xyz, classes, scores)


def evaluate_tomograms(pairs, diameters=None, radius_frac=0.5, radius=None, **kw):
    """Figures per tomogram and over all of them: ``pairs`` maps a tomogram's name to its
    (picks, reference) tables (picks may be None: nothing picked). The overall figures pool
    the matches of every tomogram (not the mean of the per-tomogram figures), so a tomogram
    counts by its particles."""
    per = {}
    empty = CoordTable(np.zeros((0, 3)), [], [])
    for name in sorted(pairs):
        pred, ref = pairs[name]
        per[name] = evaluate(pred if pred is not None else empty, ref, diameters, radius_frac, radius, **kw)
    tables = [t for p, r in pairs.values() for t in (p, r) if t is not None and len(t)]
    offset = 10.0 * max([1.0] + [float(np.abs(t.xyz).max()) for t in tables])
    names = sorted(pairs)
    preds = [pairs[n][0] if pairs[n][0] is not None else empty for n in names]
    overall = evaluate(pooled_table(preds, offset), pooled_table([pairs[n][1] for n in names], offset),
                       diameters, radius_frac, radius, **kw)
    return {"overall": overall, "per_tomogram": per}


def shrec_hits(pred, ref, occupancy):
    """SHREC'21 hit test: a prediction hits the particle whose occupancy holds its voxel.

    ``occupancy[z, y, x]`` holds the 1-based reference row of the owning particle.
    """
    idx = np.round(pred.xyz).astype(int)
    shape = np.array(occupancy.shape)[::-1]
    inside = np.all((idx >= 0) & (idx < shape), axis=1)
    owner = np.zeros(len(pred), dtype=int)
    owner[inside] = occupancy[idx[inside, 2], idx[inside, 1], idx[inside, 0]]
    hit = owner > 0
    uniq = np.unique(owner[hit])
    class_ok = 0
    if pred.classes is not None and ref.classes is not None and hit.any():
        class_ok = int(np.sum(pred.classes[hit] == ref.classes[owner[hit] - 1]))
    return {"hits": int(len(uniq)), "duplicates": int(hit.sum() - len(uniq)),
            "outside": int((~hit).sum()), "missed": int(len(ref) - len(uniq)),
            "class_correct": class_ok,
            "recall": float(len(uniq) / len(ref)) if len(ref) else 1.0}


def matched_filter_dprime(noisy, clean, centre_zyx, half, rng, n_background=300):
    """Detectability of one particle for an oracle: d' of its own noise-free box as a matched filter.

    The box of side ``2 * half + 1`` around ``centre_zyx`` in ``clean`` (the same scene
    without noise; mean removed) is correlated with ``noisy`` at the centre and at
    ``n_background`` random places at least ``2 * half`` voxels (city-block) away; returns
    (response at the centre - mean elsewhere) / std elsewhere. A practical upper bound for
    any picker: the filter knows the particle's exact shape, orientation, CTF and missing
    wedge (it is the optimal detector in white noise, where d' is about ||template|| /
    sigma; against the coloured noise of a reconstruction a prewhitened filter could gain
    a little).
    """
    Z, Y, X = noisy.shape
    z, y, x = (int(v) for v in centre_zyx)
    if not (half <= z < Z - half and half <= y < Y - half and half <= x < X - half):
        raise ValueError(f"centre {centre_zyx} is closer than {half} voxels to the border")
    template = clean[z - half:z + half + 1, y - half:y + half + 1, x - half:x + half + 1].astype(np.float64)
    template = (template - template.mean()).ravel()

    def response(zz, yy, xx):
        b = noisy[zz - half:zz + half + 1, yy - half:yy + half + 1, xx - half:xx + half + 1].astype(np.float64)
        return float((b - b.mean()).ravel() @ template)

    background = []
    while len(background) < n_background:
        zz, yy, xx = rng.integers(half, Z - half), rng.integers(half, Y - half), rng.integers(half, X - half)
        if abs(zz - z) + abs(yy - y) + abs(xx - x) > 2 * half:
            background.append(response(zz, yy, xx))
    background = np.asarray(background)
    return (response(z, y, x) - background.mean()) / background.std()


def challenge_score(runs, radii, weights=None, beta=4.0, distance_multiplier=0.5):
    """The CZII CryoET Object Identification challenge's metric over several runs.

    ``runs``: {run name: (picks, reference)} CoordTables (class = object name); ``radii``:
    {object: particle radius in voxels}; ``weights``: {object: weight} (default 1 each). A
    reference particle is found when a pick of its object lies within ``distance_multiplier``
    x its radius; per object, tp = references found, fp = picks - tp, fn = references - tp,
    each counted over all runs; F-beta per object from the pooled counts; the score is the
    weighted mean of the objects' F-beta. Returns ``{"score", "beta", "per_object": {object:
    {tp, fp, fn, precision, recall, fbeta, weight}}}``."""
    objects = sorted(set(weights or {}) | {c for p, r in runs.values() for t in (p, r) if t is not None
                                           and t.classes is not None for c in t.class_names()})
    objects = [o for o in objects if o in radii]
    per, b2 = {}, beta * beta
    for obj in objects:
        tp = fp = fn = 0
        for pred, ref in runs.values():
            p = pred.xyz[pred.classes == obj] if pred is not None and len(pred) else np.zeros((0, 3))
            r = ref.xyz[ref.classes == obj] if ref is not None and len(ref) else np.zeros((0, 3))
            found = set()
            if len(p) and len(r):
                for hits in cKDTree(p).query_ball_tree(cKDTree(r), r=distance_multiplier * radii[obj]):
                    found.update(hits)
            tp += len(found)
            fp += max(0, len(p) - len(found))
            fn += len(r) - len(found)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        fb = (1 + b2) * prec * rec / (b2 * prec + rec) if prec + rec else 0.0
        per[obj] = {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "fbeta": fb,
                    "weight": float((weights or {}).get(obj, 1.0))}
    total = sum(v["weight"] for v in per.values())
    score = sum(v["weight"] * v["fbeta"] for v in per.values()) / total if total else 0.0
    return {"score": float(score), "beta": beta, "distance_multiplier": distance_multiplier, "per_object": per}
