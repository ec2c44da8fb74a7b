"""The DISCA loop (DISCA, "Methods" and Fig. 2): E-steps cluster features with a Gaussian
mixture chosen by BIC, M-steps train YOPO on the labels."""
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from ..devices import resolve_device
from ..errors import InputError
from ..options import ClassifyOptions
from ..options.base import k_range as k_range_of
from .boxes import bin_boxes, box_contrast, normalize_box
from .descriptors import _project, invariant_descriptors, radial_profiles, shape_features
from .mixture import align_labels, ddbi, fit_gmm_bic, fit_gmm_from_labels, posterior_of, split_by_density
from .refinement import refine_and_merge
from .yopo import YOPO, _train_head, _train_step, extract_features, rotate_boxes

# below this many boxes the YOPO iterations lower what the first E-step found (75, 250, 500 and
# 600 picks in context: homogeneity 0.65 -> 0.60, 0.78 -> 0.01, 0.74 -> 0.54, 0.56 -> 0.47);
# on 2,000 isolated sub-tomograms they raise it (0.89 -> 0.99). Between 600 and 2,000 unmeasured.
NETWORK_FROM = 1000
PER_DIMENSION = 10


# the network's training and the loop's stop (the DISCA paper's, "Methods")
BATCH, LR, SMOOTHING, TOL = 32, 1e-3, 0.2, 0.01
CHANNELS, N_FEATURES = (8, 16, 16, 32, 32), 64
COVARIANCE = "auto"         # the mixtures' covariance: tied or full, by BIC


def disca(stack, options=None, contrast=None, descriptors=None, equalised=False, shape=None, log=print, **kw):
    """Cluster a (n, b, b, b) normalised stack. Returns a dict with ``labels``, ``posterior``,
    ``k``, ``iteration`` (the lowest-DDBI one of the most frequent K), ``history`` (per-iteration K, BIC, DDBI,
    label change, seconds), ``embedding`` (n, 2) and ``features``.

    ``options``: a :class:`picker3d.engine.options.ClassifyOptions` (k_range, iterations,
    epochs, seed, device, pca_dim, network_from, contrast_weight are read); keywords named as
    its fields override it. The first E-step clusters ``descriptors`` (default:
    :func:`invariant_descriptors` of ``stack``; ``equalised``: they are noise-equalised and
    keep their own scale in the projection); later ones the network's features next to them.
    ``shape`` (n, s), e.g. :func:`shape_features`, follows the descriptors in every E-step,
    each column weighted ``shape_weight`` times a standardised column.
    ``contrast`` (n, c), e.g. :func:`box_contrast`, is appended to the features of every
    E-step, each column weighted ``contrast_weight`` times a standardised feature column (a
    few numbers among ~100 feature columns would otherwise hardly reach the PCA). ``pca_dim``
    is capped at one dimension per ten boxes. With fewer boxes than ``network_from`` the
    first E-step is the result (YOPO trained on a few hundred boxes loses what the
    descriptors hold: docs/classification.md).
    """
    o = dataclasses.replace(options or ClassifyOptions(), **kw)
    stack, k_range, contrast, descriptors = _checked_inputs(stack, k_range_of(o.k_range), contrast, descriptors)
    iterations = o.iterations
    if len(stack) < o.network_from and iterations > 1:
        log(f"{len(stack)} boxes (< {o.network_from}): the descriptors' clustering is the result, "
            "without network iterations")
        iterations = 1
    # at least ten boxes per dimension the mixture sees (its covariance is estimated from them)
    dim = min(o.pca_dim, max(2, len(stack) // PER_DIMENSION))
    device = resolve_device(o.device)
    torch.manual_seed(o.seed)
    rng = np.random.default_rng(o.seed)
    model = YOPO(2, CHANNELS, N_FEATURES).to(device)
    if stack.shape[1] < model.min_box:
        raise InputError(f"--box: sub-volumes of {stack.shape[1]} voxels are smaller than the network's "
                         f"{model.min_box}-voxel receptive field (use a larger box or less binning)")
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    prev, history, best_by_k = None, [], {}
    t_start = time.time()
    for it in range(iterations):
        t0 = time.time()
        feats = _features(it, model, stack, descriptors, shape, contrast, device)
        # noise-equalised descriptors (at the front) keep their own scale; the rest is standardised
        standardise = np.arange(feats.shape[1]) >= descriptors.shape[1] if equalised else None
        Z = _project(feats, dim, o.seed, _feature_weights(feats, descriptors, shape, contrast, o), standardise)
        labels, post, entry = _e_step(Z, prev, k_range, o.seed + it, COVARIANCE)
        k = entry["k"]
        history.append(dict(entry, iteration=it))
        if k not in best_by_k or entry["ddbi"] < best_by_k[k]["ddbi"]:
            best_by_k[k] = {"ddbi": entry["ddbi"], "labels": labels, "posterior": post, "iteration": it, "k": k,
                            "features": feats, "Z": Z}
        stop = prev is not None and entry["label_change"] < TOL
        if not stop and it < iterations - 1:
            # M-step: train YOPO on the current labels (smoothed; the factor decays to 0)
            alpha = SMOOTHING * (1.0 - it / max(iterations - 1, 1))
            if k != model.head.out_features or it == 0:
                model.new_head(k)
                _train_head(model, extract_features(model, stack, device), labels, k)
                opt = torch.optim.Adam(model.parameters(), lr=LR)
            history[-1]["loss"] = _m_step(model, opt, stack, labels, k, alpha, o.epochs, BATCH, rng, device)
        history[-1]["seconds"] = time.time() - t0
        log(_iteration_line(history[-1], iterations))
        prev = labels
        if stop:
            log(f"labels stable (change {entry['label_change']:.4f} < {TOL}): stopping")
            break
    return _result(history, best_by_k, o.seed, log, t_start)


def _checked_inputs(stack, k_range, contrast, descriptors):
    """The stack as contiguous float32, K candidates as a list, the contrast as (n, c) and the
    first E-step's descriptors (computed when not given); one line for what cannot work."""
    if contrast is not None:
        contrast = np.asarray(contrast, dtype=np.float32).reshape(len(stack), -1)
    if descriptors is None:
        descriptors = invariant_descriptors(stack)
    stack = np.ascontiguousarray(stack, dtype=np.float32)
    k_range = list(k_range)
    if len(stack) <= max(2, min(k_range)):
        raise InputError(f"{len(stack)} particles are too few to cluster into at least {min(k_range)} classes")
    return stack, k_range, contrast, descriptors


def _features(it, model, stack, descriptors, shape, contrast, device):
    """The features of an E-step: the descriptors first, the shape features, the network's
    (from the second iteration) and the contrast (every column but the noise-equalised
    descriptors' is standardised before the PCA)."""
    blocks = [descriptors, shape, None if it == 0 else extract_features(model, stack, device), contrast]
    return np.concatenate([b for b in blocks if b is not None], 1)


def _feature_weights(feats, descriptors, shape, contrast, o):
    """Column weights after standardisation: ``shape_weight`` per shape column,
    ``contrast_weight`` per contrast column, 1 for the others."""
    weights = np.ones(feats.shape[1])
    if shape is not None:
        weights[descriptors.shape[1]:descriptors.shape[1] + shape.shape[1]] = o.shape_weight
    if contrast is not None:
        weights[feats.shape[1] - contrast.shape[1]:] = o.contrast_weight
    return weights


def _e_step(Z, prev, k_range, seed, covariance="full"):
    """Mixture by BIC over ``k_range``; from the second iteration a fit warm-started from the
    previous labels competes with the fresh one (the lower BIC is kept). Labels are aligned
    to the previous iteration's. Returns (labels, posterior, history entry)."""
    fresh, bics = fit_gmm_bic(Z, k_range, seed=seed, covariance=covariance)
    chosen, source = fresh, "fresh"
    if prev is not None:
        warm = fit_gmm_from_labels(Z, prev, seed=seed, covariance=covariance)
        if warm is not None and warm.bic_ <= fresh.bic_:   # keep the fresh fit only if better
            chosen, source = warm, "warm"
    labels = align_labels(chosen.predict(Z), prev)
    post = chosen.predict_proba(Z).max(axis=1)
    change = 1.0 if prev is None else float(np.mean(labels != prev))
    entry = {"k": int(labels.max()) + 1, "bic": chosen.bic_, "bic_by_k": bics, "fit": source,
             "ddbi": ddbi(Z, labels), "label_change": change}
    return labels, post, entry


def _m_step(model, opt, stack, labels, k, alpha, epochs, batch, rng, device):
    """YOPO trained on every box and a randomly rotated copy, labels smoothed by ``alpha``;
    returns the mean loss."""
    model.train()
    losses = []
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(stack)), max(1, len(stack) // batch)):
            x = torch.from_numpy(stack[idx])[:, None].to(device)
            x = torch.cat([x, rotate_boxes(x, rng)])
            y = torch.from_numpy(np.concatenate([labels[idx]] * 2)).long().to(device)
            target = F.one_hot(y, k).float() * (1 - alpha) + alpha / k
            losses.append(_train_step(model, opt, x, target))
    return float(np.mean(losses))


def _iteration_line(h, iterations):
    # the last iteration (or a stable one) has no M-step, hence no loss
    loss_txt = f"{h['loss']:.3f}" if "loss" in h else "- (no training)"
    return (f"iteration {h['iteration'] + 1}/{iterations}: K={h['k']} ({h['fit']} fit) DDBI={h['ddbi']:.3f} "
            f"label change={h['label_change']:.3f} loss={loss_txt} {h['seconds']:.1f}s")


def _result(history, best_by_k, seed, log, t_start):
    """DDBI favours merging two close classes, so it only compares iterations that agree on
    K: the result is the lowest-DDBI iteration among those with the most frequent K (ties:
    the later K, as the features improve over iterations)."""
    ks = [h["k"] for h in history]
    k_mode = max(set(ks), key=lambda k: (ks.count(k), max(i for i, x in enumerate(ks) if x == k)))
    best = best_by_k[k_mode]
    Zb = best["Z"]
    emb = PCA(2, random_state=seed).fit_transform(Zb) if Zb.shape[1] >= 2 else np.c_[Zb, np.zeros(len(Zb))]
    log(f"result: iteration {best['iteration'] + 1} (lowest DDBI {best['ddbi']:.3f}), K={best['k']}, "
        f"{time.time() - t_start:.1f}s")
    return {"labels": best["labels"], "posterior": best["posterior"], "k": best["k"],
            "iteration": best["iteration"], "ddbi": best["ddbi"], "history": history,
            "embedding": emb, "features": best["features"], "Z": Zb}


def disca_on_boxes(stack, options=None, log=print, **kw):
    """:func:`disca` on boxes in the tomogram's units (e.g. ``extract_subvolumes(...,
    per_box=False)``): binned by ``bin``, each box normalised for the shape features, the
    first E-step on the noise-equalised radial density profiles of the full-size boxes
    (:func:`radial_profiles`) and, with ``shape_weight`` > 0, their :func:`shape_features`, and with ``contrast_weight`` > 0 the boxes'
    :func:`box_contrast` next to them; then, with ``split_separation`` > 0, each class whose
    centre density is clearly bimodal is split in two (:func:`split_by_density`: empty-ice
    picks that share a class with particles). ``options``: a
    :class:`picker3d.engine.options.ClassifyOptions`, keywords override it. The result holds
    :func:`disca`'s keys, ``splits`` and ``contrast`` (None unless computed). Measurements:
    docs/classification.md.

    Example: ``disca_on_boxes(stack, ClassifyOptions(k_range=range(2, 9)))["labels"]``"""
    o = dataclasses.replace(options or ClassifyOptions(), **kw)
    binned = bin_boxes(stack, o.bin)
    need_contrast = o.contrast_weight > 0 or o.split_separation > 0
    contrast = box_contrast(binned) if need_contrast else None
    shape = shape_features(stack) if o.shape_weight > 0 else None
    res = disca(normalize_box(binned), o, contrast=contrast if o.contrast_weight > 0 else None,
                descriptors=radial_profiles(stack), equalised=True, shape=shape, log=log)
    if o.split_separation > 0:
        labels, post, splits = split_by_density(res["labels"], contrast[:, 1], res["posterior"],
                                                min_separation=o.split_separation, seed=o.seed, log=log)
        if splits:
            res.update(labels=labels, posterior=post, k=int(labels.max()) + 1)
        res["splits"] = splits
    res["contrast"] = contrast
    return res


def classify_boxes(stack, options=None, log=print, **kw):
    """What ``picker3d classify`` does to boxes in the tomogram's units: :func:`disca_on_boxes`;
    then, with ``merge``, classes from their aligned averages (:func:`refine_and_merge`: small
    classes dissolved, classes of one species merged, with ``refine`` every pick reassigned) and
    empty picks split from the merged classes (:func:`split_by_density`, ``split_separation``).
    Returns :func:`disca_on_boxes`' dict with the final ``labels``, ``posterior`` and ``k``, and
    ``k_clustering`` (the clustering's K), ``merges``, ``splits``, ``origin`` (each final class's
    clustering class) and ``alignment`` ((matrices, shifts) of every pick onto its class
    average, full-size voxels; None without merging)."""
    o = dataclasses.replace(options or ClassifyOptions(), **kw)
    if not o.merge:
        res = disca_on_boxes(stack, o, log=log)
        splits = res.get("splits", [])
        k = res["k"] - len(splits)
        return dict(res, k_clustering=k, merges=[], origin=list(range(k)) + [c for c, *_ in splits], alignment=None)
    # empty picks are split from the merged classes: more boxes per class for the test
    res = disca_on_boxes(stack, o, log=log, split_separation=0)
    labels, k = res["labels"], res["k"]
    res.update(k_clustering=k, merges=[], splits=[], origin=list(range(k)), alignment=None)
    if k > 1:
        merged = refine_and_merge(normalize_box(stack), labels, tilt_range=o.tilt_range,
                                  min_size=o.min_class_size or None, refine=o.refine, k_min=min(k_range_of(o.k_range)),
                                  seed=o.seed, log=log)
        labels = merged["labels"]
        res.update(labels=labels, posterior=posterior_of(res["Z"], labels, o.seed), merges=merged["merges"],
                   origin=list(merged["old_classes"]), alignment=(merged["matrices"], merged["shifts"]))
    if o.split_separation > 0:
        contrast = res["contrast"] if res["contrast"] is not None else box_contrast(bin_boxes(stack, o.bin))
        labels, res["posterior"], res["splits"] = split_by_density(
            labels, contrast[:, 1], res["posterior"], min_separation=o.split_separation, seed=o.seed, log=log)
        res["origin"] += [res["origin"][c] for c, *_ in res["splits"]]
    res.update(labels=labels, k=int(labels.max()) + 1)
    return res
