"""Sparse-label training: positive-unlabeled (PU) learning on Gaussian centre heatmaps (the sparse-label paper).

Targets (the sparse-label paper §3.2): one Gaussian heatmap per class (sigma = d/6, so the kernel is ~1 %
at the particle radius), exactly 1 at the voxel nearest each annotated centre. Voxels are

- *true positives* (tp): heatmap = 1 (annotated centres);
- *soft positives* (sp): 0.01 < heatmap < 1 (their neighbourhood);
- *unlabeled* (u): everything else — not negatives: unannotated particles live there.

Loss: the non-negative PU risk with focal terms (the sparse-label paper Eq. 4-7, alpha = 2, beta = 4)

    R = pi_p (pi_tp R_tp+ + pi_sp R_sp+) + max(0, R_u- - pi_p (pi_tp R_tp- + pi_sp R_sp-))

    R_tp+ = -(1 - p)^a log p            R_sp+ = -(1 - y)^b p^a log(1 - p)
    R_tp- = -p^a log(1 - p)             R_sp- = -y^b (1 - p)^a log p
    R_u-  = -p^a log(1 - p)

each the mean over its voxels (the paper writes the log-likelihoods; the risks are their
negatives), pi_p the class prior: the fraction of *all* voxels that are positive.
pi_tp and pi_sp, the mixing weights of centres and their neighbourhood, are not given in
the paper. In the positive risk we use 1/2 each (``TP_SHARE``): taken as voxel-count shares
the centre term gets ~1/2,700 of the weight for a 17-voxel particle, and 60 training steps
learned nothing (validation F1 0.29; with 1/2 each: 1.00). In the subtracted term
pi_p R_p-, which stands for the unannotated particles hidden in the unlabeled risk, the
weights are the voxel-count shares, because that is how those particles are present there
(``correction_share="voxels"``). With 1/2 there too, the term claimed ~170x too many
centres; once the network was confident on them it exceeded R_u- on every training step
after the first epoch (measured: clamp engaged 100 %), so the unlabeled risk gave no
gradient and nothing taught the network what is *not* a particle (barrel, 10 % labels,
4 minutes: test F1 0.68 -> 0.78, AP 0.55 -> 0.76; clamp engaged on 10-37 % of steps).
The clamp at 0 is Kiryo et al.'s non-negative estimator: without it the unlabeled risk
minus the positive part goes negative and the network overfits the few annotated particles.

The class prior must be given: ``prior_from_count`` turns a rough particle count per
tomogram into it (count x positive voxels per particle / tomogram voxels), and
``check_prior`` says when it contradicts the annotations.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from .formats.table import diameter_of
from .masks import gaussian_heatmap

SIGMA_FRAC = 1.0 / 6.0
SOFT_MIN = 0.01       # below this the Gaussian tail counts as unlabeled
ALPHA, BETA = 2.0, 4.0
TP_SHARE = 0.5


def centre_heatmaps(shape, table, class_names, diameters):
    """(C, Z, Y, X) float32 targets: Gaussian per class, 1 at each centre's nearest voxel."""
    heat = gaussian_heatmap(shape, table, diameters, class_names, sigma_frac=SIGMA_FRAC, per_class=True)
    if len(table):
        lookup = {c: i for i, c in enumerate(class_names)}
        classes = table.classes if table.classes is not None else [class_names[0]] * len(table)
        idx = np.clip(np.rint(table.xyz[:, ::-1]).astype(int), 0, np.array(shape) - 1)
        for (z, y, x), c in zip(idx, classes):
            if c in lookup:
                heat[lookup[c], z, y, x] = 1.0
    return heat


def positive_voxels_per_particle(diameter):
    """Voxels whose heatmap value exceeds SOFT_MIN around one particle (tp + sp)."""
    sigma = max(diameter * SIGMA_FRAC, 0.5)
    r = sigma * math.sqrt(2.0 * math.log(1.0 / SOFT_MIN))
    ri = int(math.ceil(r))
    g = np.mgrid[-ri:ri + 1, -ri:ri + 1, -ri:ri + 1].reshape(3, -1)
    return int(((g ** 2).sum(axis=0) < r * r).sum())


def prior_from_count(n_particles, diameter, shape):
    """Class prior pi_p for about ``n_particles`` of this diameter in a volume of ``shape``."""
    return float(n_particles) * positive_voxels_per_particle(diameter) / float(np.prod(shape))


def check_prior(prior, heat):
    """A warning (or None) when ``prior`` contradicts the annotated heatmap ``(Z, Y, X)``."""
    labelled = float((heat > SOFT_MIN).mean())
    if labelled == 0:
        return None
    if prior < labelled:
        return (f"the class prior {prior:.2e} is below the fraction of voxels the annotations alone "
                f"cover ({labelled:.2e}): raise it (it counts all particles, annotated or not)")
    if prior > 50 * labelled:
        return (f"the class prior {prior:.2e} implies over 50x the annotated particles "
                f"(annotated fraction {labelled:.2e}): check it")
    return None


def centre_mask(heat):
    """True at annotated centres (heatmap exactly 1, up to float rounding)."""
    return heat >= 1.0 - 1e-6


def pu_risks(logits, heat, alpha=ALPHA, beta=BETA):
    """Per-class risk terms (each a (C,) tensor): R_tp+, R_sp+, R_tp-, R_sp-, R_u-, pi_tp, pi_sp.

    ``logits`` and ``heat`` are (B, C, Z, Y, X); terms with no voxels are 0.
    """
    p = torch.sigmoid(logits)
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)      # stable log p, log(1 - p)
    tp = centre_mask(heat)
    sp = (heat > SOFT_MIN) & ~tp
    un = heat <= SOFT_MIN
    dims = (0, 2, 3, 4)

    def mean(values, where):
        n = where.sum(dims)
        return (values * where).sum(dims) / n.clamp(min=1), n

    r_tp_pos, n_tp = mean(-(1 - p) ** alpha * logp, tp)
    r_sp_pos, n_sp = mean(-(1 - heat) ** beta * p ** alpha * log1mp, sp)
    r_tp_neg, _ = mean(-p ** alpha * log1mp, tp)
    r_sp_neg, _ = mean(-heat ** beta * (1 - p) ** alpha * logp, sp)
    r_u_neg, _ = mean(-p ** alpha * log1mp, un)
    n_pos = (n_tp + n_sp).clamp(min=1).to(logits.dtype)
    return r_tp_pos, r_sp_pos, r_tp_neg, r_sp_neg, r_u_neg, n_tp / n_pos, n_sp / n_pos


def pu_loss(logits, heat, prior, alpha=ALPHA, beta=BETA, non_negative=True, tp_share="default",
            correction_share="voxels"):
    """Non-negative PU risk (the sparse-label paper Eq. 7), summed over classes. ``prior``: float or (C,).

    ``tp_share``: the weight pi_tp of the centre term in the positive risk (pi_sp = 1 - pi_tp);
    None takes the voxel-count shares. ``correction_share``: the weights in the subtracted
    term pi_p R_p-, "voxels" (default) or "same" (as in the positive risk).
    """
    r_tp_pos, r_sp_pos, r_tp_neg, r_sp_neg, r_u_neg, vox_tp, vox_sp = pu_risks(logits, heat, alpha, beta)
    tp_share = TP_SHARE if tp_share == "default" else tp_share
    pi_tp, pi_sp = vox_tp, vox_sp
    if tp_share is not None:     # fixed weights where both kinds of positive are present
        both = (vox_tp > 0) & (vox_sp > 0)
        pi_tp = torch.where(both, torch.full_like(vox_tp, tp_share), vox_tp)
        pi_sp = torch.where(both, 1.0 - pi_tp, vox_sp)
    if correction_share == "voxels":
        # pi_p R_p- stands for the unannotated particles inside the unlabeled risk, which
        # holds their centres and neighbourhoods in proportion to voxels: one centre per
        # ~340 heatmap voxels (barrel at bin 2). With the positive risk's 1/2 it claimed ~170x
        # too many centres, and as soon as the network was confident on them (-log(1 - p)
        # grows without bound) the clamp engaged on every step after the first epoch: the
        # unlabeled risk then gave no gradient, so nothing taught what is *not* a particle.
        c_tp, c_sp = vox_tp, vox_sp
    elif correction_share == "same":
        c_tp, c_sp = pi_tp, pi_sp
    else:
        raise ValueError(f"correction_share: {correction_share!r} is not 'voxels' or 'same'")
    prior = torch.as_tensor(prior, dtype=logits.dtype, device=logits.device).expand_as(r_u_neg)
    positive = prior * (pi_tp * r_tp_pos + pi_sp * r_sp_pos)
    negative = r_u_neg - prior * (c_tp * r_tp_neg + c_sp * r_sp_neg)
    if non_negative:
        negative = torch.clamp(negative, min=0.0)
    return (positive + negative).sum()


def pn_loss(logits, heat, alpha=ALPHA, beta=BETA):
    """Unlabeled-as-negative baseline: CenterNet's focal heatmap loss (every voxel that is not
    an annotated centre is a (down-weighted near centres) negative), per annotated centre."""
    p = torch.sigmoid(logits)
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    tp = centre_mask(heat)
    pos = (-(1 - p) ** alpha * logp * tp).sum()
    neg = (-(1 - heat) ** beta * p ** alpha * log1mp * ~tp).sum()
    return (pos + neg) / tp.sum().clamp(min=1)


def _annotation_shares(tables, class_names):
    """Each class's share of the annotated particles (equal shares when there are none)."""
    counts = np.array([sum(int((t.classes == c).sum()) if t.classes is not None else len(t) for t in tables)
                       for c in class_names], dtype=float)
    return counts / counts.sum() if counts.sum() else np.full(len(class_names), 1.0 / len(class_names))


def class_priors(prior, tables, class_names, diameters):
    """Split a total prior over classes in proportion to the voxels each class covers: its
    share of the annotated particles times the heatmap voxels of one of its particles (so the
    particle counts keep the annotations' proportions; an equal split of the voxels would
    give a small class several times its particles and a large one a fraction)."""
    weights = _annotation_shares(tables, class_names) * np.array(
        [positive_voxels_per_particle(diameter_of(diameters, c)) for c in class_names], dtype=float)
    return (float(prior) * weights / weights.sum()).tolist()


def prior_from_counts(n_particles, tables, class_names, diameters, shape):
    """Total prior for ``n_particles`` per tomogram, split by annotation shares, sized per class."""
    share = _annotation_shares(tables, class_names)
    return float(sum(prior_from_count(n_particles * s, diameter_of(diameters, c), shape)
                     for s, c in zip(share, class_names)))


# ----------------------------------------------------------------------------------------
# voxel-level debiased contrastive module (the sparse-label paper Eq. 8-13)
# ----------------------------------------------------------------------------------------

TEMPERATURE = 0.07          # the sparse-label paper §4.2 (EMPIAR-10304)
UNSUP_WEIGHT = 0.5          # lambda_2 of the sparse-label paper Eq. 15
N_UNLABELED = 256           # unlabeled voxels sampled per batch and view


def _debiased_term(pos, neg_mean, same_class, temperature):
    """-log(pos / (pos + g)) with Chuang et al.'s debiased negative term
    g = max((neg_mean - tau+ pos) / (1 - tau+), e^(-1/t)), tau+ = ``same_class`` the chance
    that a "negative" shares the anchor's class."""
    g = torch.clamp((neg_mean - same_class * pos) / (1.0 - same_class), min=math.exp(-1.0 / temperature))
    return -torch.log(pos / (pos + g))


def contrastive_loss(feats, view_feats, heat, probs, prior, generator=None, n_unlabeled=N_UNLABELED,
                     temperature=TEMPERATURE, unsup_weight=UNSUP_WEIGHT, projection=None):
    """Supervised + unlabeled debiased contrastive loss on projected voxel features.

    ``feats`` / ``view_feats``: (B, D, Z, Y, X) features of a batch and of its augmented
    view, already mapped back onto the batch's voxels; ``projection`` (the projection head, a
    per-voxel map; None = the features as they are) is applied to the voxels the loss uses
    only, then each vector is normalised; ``heat``: (B, C, ...)
    targets; ``probs``: (B, C, ...) the predicted heatmap (no gradient needed), which weighs
    each unlabeled anchor between "particle" and "background" (Eq. 11); ``prior``: (C,)
    class priors pi_p. Returns L_sup + ``unsup_weight`` L_unsup (the bracket of Eq. 15).

    - Eq. 8-9, per class: every annotated centre, in both views, is an anchor whose positives
      are the other centres of its class (other particles are its "natural augmentations");
      ``n_unlabeled`` sampled voxels that are not centres (both views) are its negatives.
    - Eq. 10-13: each sampled unlabeled voxel's positive is its own other view; all other
      sampled vectors are negatives.
    The debiased denominators follow Chuang et al. (the sparse-label paper's ref. [7]): a particle anchor's
    negatives are particles with probability pi_p, a background anchor's with pi_n = 1 - pi_p
    (Eq. 12 and 13 print the prior inside the bracket the other way round; with voxel priors of
    ~0.02 that reading would cancel almost every negative of a particle anchor).
    """
    def voxels(t):      # (B, K, Z, Y, X) -> (voxels, K)
        return t.permute(0, 2, 3, 4, 1).reshape(-1, t.shape[1])

    f_all, fv_all = voxels(feats), voxels(view_feats)

    def embed(rows, which):     # projected, normalised vectors of some voxels
        v = which[rows]
        return F.normalize(projection(v) if projection is not None else v, dim=1)

    heat = voxels(heat)
    p_hat = voxels(probs).amax(dim=1)
    prior = torch.as_tensor(prior, dtype=f_all.dtype, device=f_all.device).reshape(-1).expand(heat.shape[1])
    centre = centre_mask(heat)
    unl = torch.nonzero(~centre.any(dim=1)).ravel()
    pick = torch.randperm(len(unl), generator=generator)[:n_unlabeled].to(unl.device)
    unl = unl[pick]
    u = torch.cat([embed(unl, f_all), embed(unl, fv_all)])      # 2 n_u unlabeled vectors
    sup, n_anchor = u.new_zeros(()), 0
    for c in range(heat.shape[1]):
        idx = torch.nonzero(centre[:, c]).ravel()
        if len(idx) == 0:
            continue
        pv = torch.cat([embed(idx, f_all), embed(idx, fv_all)])     # 2 n_p anchors
        sim = torch.exp(pv @ pv.T / temperature)
        pos = (sim.sum(1) - sim.diagonal()) / (len(pv) - 1)
        neg = torch.exp(pv @ u.T / temperature).mean(1)
        sup = sup + _debiased_term(pos, neg, prior[c], temperature).sum()
        n_anchor += len(pv)
    sup = sup / max(n_anchor, 1)
    if unsup_weight == 0 or len(unl) == 0:
        return sup
    n = len(unl)
    sim = torch.exp(u @ u.T / temperature)
    pair = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(u.device)
    pos = sim[torch.arange(2 * n, device=u.device), pair]
    neg = (sim.sum(1) - sim.diagonal() - pos) / max(2 * n - 2, 1)
    w = p_hat[unl].repeat(2).to(u.dtype)
    pi_p = prior.sum().clamp(max=1.0 - 1e-3)
    unsup = (w * _debiased_term(pos, neg, pi_p, temperature)
             + (1 - w) * _debiased_term(pos, neg, 1.0 - pi_p, temperature)).mean()
    return sup + unsup_weight * unsup
