"""Gaussian mixtures chosen by BIC, label alignment, DDBI, the split by centre density, and clustering scores."""
import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, completeness_score, homogeneity_score
from sklearn.mixture import GaussianMixture

from ..errors import InputError


def _gmm(k, seed, reg, covariance="full", **init):
    return GaussianMixture(k, covariance_type=covariance, reg_covar=reg, max_iter=300,
                           random_state=seed, **init)


def fit_gmm_bic(Z, k_range, seed=0, reg=1e-3, covariance="full"):
    """Mixtures (``covariance`` full, diag or tied) for every K in ``k_range``; ``"auto"``: tied
    and full ones, BIC choosing the form as it chooses K (a shared covariance costs its
    parameters once, which a few hundred picks can pay; thousands pay for one per class).
    Returns (best, {K: BIC of the best form})."""
    best, bics = None, {}
    forms = ("tied", "full") if covariance == "auto" else (covariance,)
    for k in k_range:
        if k > len(Z) - 1:
            break
        for form in forms:
            g = _gmm(k, seed, reg, form).fit(Z)
            bic = float(g.bic(Z))
            bics[k] = min(bics.get(k, np.inf), bic)
            if best is None or bic < best.bic_:
                best = g
                best.bic_ = bic
    if best is None:
        raise InputError(f"{len(Z)} particles are too few to cluster (need more than {min(k_range)})")
    return best, bics


def _cluster_moments(Z, labels, reg):
    """Members, means and regularised covariances of the clusters with at least two members."""
    d = Z.shape[1]
    members = [Z[labels == k] for k in np.unique(labels) if (labels == k).sum() > 1]
    means = [m.mean(axis=0) for m in members]
    covs = [np.cov(m, rowvar=False).reshape(d, d) + reg * np.eye(d) for m in members]
    return members, means, covs


def fit_gmm_from_labels(Z, labels, seed=0, reg=1e-3, covariance="full"):
    """Mixture warm-started from hard labels (weights, means, covariances of each group)."""
    members, means, covs = _cluster_moments(Z, labels, reg)
    if not members:
        return None
    weights = np.asarray([len(m) for m in members], float) / sum(len(m) for m in members)
    if covariance in ("tied", "auto"):
        # auto: the previous labels' form is not known here; the shared covariance is the
        # cheaper start, and the fresh fit (either form) competes with it
        covariance = "tied"
        # the groups' (regularised) covariances pooled by their degrees of freedom
        dof = np.asarray([len(m) - 1 for m in members], float)
        precisions = np.linalg.inv(np.tensordot(dof, np.asarray(covs), 1) / dof.sum())
    elif covariance == "full":
        precisions = np.asarray([np.linalg.inv(c) for c in covs])
    else:
        precisions = np.asarray([1.0 / np.diag(c) for c in covs])
    g = _gmm(len(members), seed, reg, covariance, weights_init=weights, means_init=np.asarray(means),
             precisions_init=precisions).fit(Z)
    g.bic_ = float(g.bic(Z))
    return g


def posterior_of(Z, labels, seed=0):
    """Each point's posterior probability of its own class under a mixture fitted from
    ``labels`` (0..K-1) on ``Z``: the posterior of classes made after the clustering (merged,
    refined)."""
    labels = np.asarray(labels)
    if labels.max() == 0:
        return np.ones(len(labels))
    g = fit_gmm_from_labels(Z, labels, seed=seed, covariance="tied")
    if g is None or g.n_components != labels.max() + 1:
        return np.full(len(labels), np.nan)
    return g.predict_proba(Z)[np.arange(len(labels)), labels]


def align_labels(new, previous):
    """Rename ``new`` cluster ids to match ``previous`` ones (Hungarian on the overlap); the
    result is renumbered 0..K-1 with matched clusters keeping their previous order."""
    new = np.asarray(new)
    nk = np.unique(new)
    if previous is None:
        return np.searchsorted(nk, new)
    pk = np.unique(previous)
    overlap = np.array([[np.sum((new == a) & (previous == b)) for b in pk] for a in nk])
    rows, cols = linear_sum_assignment(-overlap)
    target = {int(nk[r]): float(pk[c]) for r, c in zip(rows, cols)}
    extra = [a for a in nk if int(a) not in target]
    for j, a in enumerate(extra):     # new clusters go after the matched ones
        target[int(a)] = float(pk.max()) + 1 + j
    order = sorted(set(target.values()))
    rank = {v: i for i, v in enumerate(order)}
    return np.array([rank[target[int(a)]] for a in new], dtype=int)


def ddbi(Z, labels, reg=1e-3):
    """Distortion-based Davies-Bouldin index (lower = tighter, better separated clusters)."""
    members, means, covs = _cluster_moments(Z, labels, reg)
    if len(members) < 2:
        return float("inf")
    scatter = []
    for m, mu, cov in zip(members, means, covs):
        diff = m - mu
        scatter.append(float(np.mean(np.sqrt(np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)))))
    worst = []
    for i in range(len(members)):
        r = []
        for j in range(len(members)):
            if i == j:
                continue
            diff = means[i] - means[j]
            sep = math.sqrt(float(diff @ np.linalg.inv((covs[i] + covs[j]) / 2) @ diff))
            r.append((scatter[i] + scatter[j]) / max(sep, 1e-12))
        worst.append(max(r))
    return float(np.mean(worst))


def split_by_density(labels, density, posterior=None, min_separation=3.0, min_size=5, seed=0, log=print):
    """Split a class in two where its boxes' centre density is clearly bimodal.

    A shape class can hold particles *and* empty-ice picks: at low SNR an empty box and a
    particle box look alike once each is normalised, but the particle puts density at the
    centre of its pick (:func:`box_contrast`'s second column). For every class of at least
    ``2 * min_size`` boxes, one- and two-component Gaussian mixtures are fitted to that
    density (standardised over all boxes); the class is split when BIC prefers two, both
    hold ``min_size`` boxes or more, and the components are separated by Ashman's D ≥
    ``min_separation`` (D = |mu1 - mu2| / sqrt((s1² + s2²) / 2); D > 2 is the usual mark of
    a clean separation, Ashman et al. 1994; the default 3 is measured in
    docs/classification.md). The larger component keeps the class number; the other
    becomes a new class.
    ``min_separation`` 0 disables the split. Returns (labels, posterior, splits) — splits
    lists (class, new class, sizes, D)."""
    labels = np.asarray(labels).copy()
    posterior = None if posterior is None else np.asarray(posterior, dtype=np.float64).copy()
    splits = []
    if min_separation <= 0 or len(labels) == 0:
        return labels, posterior, splits
    d = np.asarray(density, dtype=np.float64).reshape(-1)
    z = ((d - d.mean()) / (d.std() + 1e-12))[:, None]
    next_label = int(labels.max()) + 1
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2 * min_size:
            continue
        zc = z[members]
        fits = [GaussianMixture(k, covariance_type="full", reg_covar=1e-3, n_init=3, random_state=seed).fit(zc)
                for k in (1, 2)]
        two = fits[1]
        if two.bic(zc) >= fits[0].bic(zc):
            continue
        part = two.predict(zc)
        sizes = np.bincount(part, minlength=2)
        mu, var = two.means_.ravel(), two.covariances_.ravel()
        sep = abs(mu[0] - mu[1]) / np.sqrt((var[0] + var[1]) / 2)
        if sizes.min() < min_size or sep < min_separation:
            continue
        moved = members[part == np.argmin(sizes)]
        labels[moved] = next_label
        if posterior is not None:
            posterior[members] *= two.predict_proba(zc).max(axis=1)
        splits.append((int(c), next_label, sizes.tolist(), float(sep)))
        log(f"class {c} ({len(members)} boxes) split by centre density into {sizes.max()} + {sizes.min()} "
            f"(class {next_label}; separation D={sep:.2f})")
        next_label += 1
    return labels, posterior, splits


def clustering_scores(truth, labels):
    """Homogeneity, completeness, adjusted Rand index and accuracy after Hungarian matching."""
    truth = np.asarray(truth)
    tk, t_idx = np.unique(truth, return_inverse=True)
    lk, l_idx = np.unique(labels, return_inverse=True)
    cont = np.zeros((len(lk), len(tk)), int)
    np.add.at(cont, (l_idx, t_idx), 1)
    r, c = linear_sum_assignment(-cont)
    return {"homogeneity": float(homogeneity_score(t_idx, l_idx)),
            "completeness": float(completeness_score(t_idx, l_idx)),
            "ari": float(adjusted_rand_score(t_idx, l_idx)),
            "accuracy": float(cont[r, c].sum() / max(len(truth), 1)),
            "k_true": int(len(tk)), "k_found": int(len(lk))}
