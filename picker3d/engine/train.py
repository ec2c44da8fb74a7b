"""Training of the 3D-ResUNet from weak labels, with validation by picking F1 and resume.

Recipe (DeepETPicker seed 000 and DeepFinder seed 001):
- per-tomogram zero-mean / unit-std normalisation (seed 000 §A.1);
- weak labels: TBall masks by default (seed 000 §A.3);
- patches centred on annotated particles with random jitter, the class drawn uniformly
  first (DeepFinder's class-balanced bootstrap), plus a share of random patches that
  teach the background (crowders, membranes, gold, empty ice);
- augmentation: mirror along each axis (this includes the 180° rotation about the tilt
  axis of seed 001, and keeps the missing wedge where it is);
- loss: soft Dice (seed 000 §A.5), cross-entropy, focal, or Dice + cross-entropy;
- AdamW with a one-cycle learning-rate schedule;
- each epoch: validation by picking on the validation tomogram, the thresholds that
  maximise its F1 are stored with the best model;
- a checkpoint after every epoch (model, optimiser, step, random states), so
  ``resume`` continues to the same result as an uninterrupted run.

Sparse labels (``labels="sparse"``, seed 002): the same network with a heatmap head learns
Gaussian centre heatmaps with the non-negative PU loss (:mod:`picker3d.engine.pu`);
unannotated voxels are unlabeled rather than background, so no hard negatives are mined.
"""
import copy
import itertools
import math
import os
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from .coords import CoordTable, diameter_of
from .errors import InputError
from .masks import label_mask
from .fileio import atomic_write, remove_stale_temporaries
from .modelfile import load_model, save_model
from .modelinfo import kept_summary
from .metrics import evaluate, match
from .network import NETWORKS, autocast, autocast_dtype, build_network, count_parameters
from .pick import default_peak_smoothing, find_particles, peak_smoothing, predict_volume
from .volume import NORMALISED, bin_volume, normalize, to_binned
from .pu import centre_heatmaps, check_prior, class_priors, contrastive_loss, pn_loss, prior_from_counts, pu_loss



# ----------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------

def soft_dice_loss(probs, target_onehot, eps=1.0):
    """Mean over foreground classes of 1 - soft Dice (seed 000 §A.5)."""
    dims = (0, 2, 3, 4)
    inter = (probs * target_onehot).sum(dims)
    denom = probs.sum(dims) + target_onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


def focal_loss(logits, target, gamma=2.0, weight=None):
    logp = F.log_softmax(logits, dim=1)
    ce = F.nll_loss(logp, target, weight=weight, reduction="none")
    pt = torch.exp(-F.nll_loss(logp, target, reduction="none"))
    return ((1 - pt) ** gamma * ce).mean()


def compute_loss(name, logits, target, n_classes, class_weight=None, prior=None):
    """Loss of a batch: dense labels (``target`` class indices) with dice / ce / focal /
    dice+ce; sparse labels (``target`` centre heatmaps) with pu (``prior`` per class) or pn."""
    if name == "pu":
        return pu_loss(logits, target, prior)
    if name == "pn":
        return pn_loss(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, n_classes + 1).permute(0, 4, 1, 2, 3).float()
    if name == "dice":
        return soft_dice_loss(probs, onehot)
    if name == "ce":
        return F.cross_entropy(logits, target, weight=class_weight)
    if name == "focal":
        return focal_loss(logits, target, weight=class_weight)
    if name == "dice+ce":
        return soft_dice_loss(probs, onehot) + F.cross_entropy(logits, target, weight=class_weight)
    raise InputError(f"--loss: unknown loss '{name}' (known: dice, ce, focal, dice+ce, pu, pn)")


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------

class TomogramData:
    """One training tomogram: normalised volume, label mask, particle table, hard negatives.

    Hard negatives are places of strong density (either contrast) that are not annotated:
    crowders, membranes, gold, ice contamination. Background patches are centred on them
    half of the time, so the network learns what is *not* a target (issue 3: the errors
    left after a CPU-budget training were unlabelled crowders picked as a species).
    This assumes complete annotation, which supervised training does.
    """

    def __init__(self, volume, table, class_names, diameters, mask_type="tball", name="", n_negatives=300,
                 sparse=False):
        from scipy import ndimage
        self.name = name
        self.volume = normalize(volume)
        self.table = table
        cls = [class_names.index(c) + 1 if c in class_names else 0 for c in
               (table.classes if table.classes is not None else [class_names[0]] * len(table))]
        self.cls = np.array(cls, dtype=int)
        if sparse:
            # (C, Z, Y, X) centre heatmaps; the rest is unlabeled, so no hard negatives
            self.labels = centre_heatmaps(self.volume.shape, table, class_names, diameters)
            self.negatives = np.zeros((0, 3), dtype=int)
            return
        # class indices in the smallest integer type (uint8 up to 255 classes: the shifted binning
        # grids keep eight label volumes per tomogram); batches are widened to int64
        self.labels = label_mask(self.volume.shape, table, diameters, mask_type, class_names).astype(
            np.min_scalar_type(len(class_names)))
        dmin = min(diameters[c] for c in class_names)
        dmax = max(diameters[c] for c in class_names)
        smooth = np.abs(ndimage.gaussian_filter(self.volume, max(dmin / 4.0, 1.0)))
        peaks = (smooth == ndimage.maximum_filter(smooth, size=max(3, int(dmin)))) & (smooth > smooth.std())
        zyx = np.argwhere(peaks)
        if len(table) and len(zyx):
            from scipy.spatial import cKDTree
            dist, _ = cKDTree(table.xyz[:, ::-1]).query(zyx)
            zyx = zyx[dist > 0.75 * dmax]
        order = np.argsort(-smooth[tuple(zyx.T)])[:n_negatives] if len(zyx) else []
        self.negatives = zyx[order] if len(zyx) else np.zeros((0, 3), dtype=int)


def holdout_split(shape, fraction):
    """Where :func:`hold_out` cuts a volume of ``shape``: (axis, first held-out index)."""
    ax = 2 if shape[2] >= shape[1] else 1       # x, else y
    return ax, int(round(shape[ax] * (1.0 - fraction)))


def hold_out(data, fraction, reach, split=None):
    """Split a training tomogram in place for validation: the far end of its longer in-plane
    axis (``fraction`` of it) becomes a validation volume and table; ``data`` keeps the rest.

    The labels are drawn on the whole tomogram before the cut, so a particle centred on one
    side and reaching across is labelled correctly on both; the validation table also holds
    the particles centred up to ``reach`` voxels before the cut (their parts may be picked).
    Returns ``(volume, table)`` of the held-out part, or None when it would be narrower than
    ``2 * reach`` or the rest narrower than the held-out part. ``split`` (axis, index) cuts
    there instead, unchecked (a copy of a tomogram cut the same way, :func:`binning_phase_copies`).
    """
    ax, cut = split if split is not None else holdout_split(data.volume.shape, fraction)
    col = 2 - ax                                                        # its column in xyz
    n = data.volume.shape[ax]
    if split is None and (n - cut < 2 * reach or cut < n - cut):
        return None
    sl = [slice(None)] * 3
    sl[ax] = slice(cut, None)
    val_volume = data.volume[tuple(sl)].copy()
    near = np.where(data.table.xyz[:, col] >= cut - reach)[0]
    val_xyz = data.table.xyz[near].copy()
    val_xyz[:, col] -= cut
    val_table = CoordTable(val_xyz, None if data.table.classes is None else data.table.classes[near])
    sl[ax] = slice(0, cut)
    data.volume = data.volume[tuple(sl)]
    data.labels = data.labels[(Ellipsis,) + tuple(sl)]
    kept = np.where(data.table.xyz[:, col] < cut - 0.5)[0]
    data.table, data.cls = data.table.subset(kept), data.cls[kept]
    data.negatives = data.negatives[data.negatives[:, ax] < cut]
    return val_volume, val_table


def augment_patch(v, lab, rng, max_angle=20.0):
    """Spatial and intensity augmentation.

    - rotation about the beam axis (z) by up to ``max_angle`` degrees: at the complete-label
      default of 20 the tilt axis stays close to y, so the wedge stays where real data has
      it (large in-plane rotations, the sparse-label default, turn it; rotations about x or
      y would tilt it, and are never made);
    - contrast x U(0.8, 1.25), offset U(-0.2, 0.2) and added Gaussian noise of up to 0.3 std
      (the tomogram is normalised to unit std), for other SNRs and defoci.
    """
    from scipy import ndimage
    angle = rng.uniform(-max_angle, max_angle)
    v = ndimage.rotate(v, angle, axes=(1, 2), reshape=False, order=1, mode="reflect")
    lab_axes = (lab.ndim - 2, lab.ndim - 1)     # labels may carry a leading class axis (heatmaps)
    lab = ndimage.rotate(lab, angle, axes=lab_axes, reshape=False, order=0, mode="constant", cval=0)
    v = v * rng.uniform(0.8, 1.25) + rng.uniform(-0.2, 0.2)
    v = v + rng.normal(0.0, rng.uniform(0.0, 0.3), size=v.shape)
    return v.astype(np.float32), lab


def consistency_view(x, rng):
    """A second view of a batch for the consistency term (seed 002 Eq. 14) and the output
    dimensions to flip back: mirrored in y and/or x (at least one; mirrors keep the missing
    wedge of a tilt axis along y where it is, and the default depth-only coord-conv channel
    unchanged), contrast x U(0.8, 1.25) and fresh Gaussian noise of 0.3 std."""
    dims = [d for d, flip in ((3, rng.random() < 0.5), (4, rng.random() < 0.5)) if flip] or [int(rng.choice([3, 4]))]
    view = torch.flip(x, dims) * float(rng.uniform(0.8, 1.25))
    noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32)).to(x.device)
    return view + 0.3 * noise, dims


def consistency_loss(logits, view_logits, dims, sparse):
    """MSE between the output probabilities of a batch and of its view flipped back (Eq. 14)."""
    back = torch.flip(view_logits, dims)
    if sparse:      # per-class sigmoid heatmaps
        return F.mse_loss(torch.sigmoid(logits), torch.sigmoid(back))
    return F.mse_loss(torch.softmax(logits, dim=1), torch.softmax(back, dim=1))


def contrastive_term(projection, feats, view_feats, dims, heat, logits, priors, rng):
    """seed 002's contrastive module on a batch: both views' features (the view mapped back
    onto the batch's voxels) through :func:`picker3d.engine.pu.contrastive_loss`, which
    projects only the voxels it samples."""
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    return contrastive_loss(feats, torch.flip(view_feats, dims), heat, torch.sigmoid(logits.detach()), priors,
                            generator=gen, projection=projection)


def binning_phase_copies(volumes, tables, factor, class_names, mask_diam, mask_type, holdout, reach):
    """The training tomograms binned again from shifted block grids (offsets 0 or factor/2 per
    axis, all but the unshifted one): the same particles with other noise averaged into each
    binned voxel and at other sub-voxel positions. Complete labels (hard negatives included)."""
    out = []
    half = factor // 2
    for i, (v, t) in enumerate(zip(volumes, tables)):
        # held out where the unshifted grid was cut, less the block a shifted grid straddles there
        split = holdout_split([n // factor for n in np.shape(v)], holdout) if holdout else None
        for o in itertools.product((0, half), repeat=3):
            if o == (0, 0, 0):
                continue
            vo = bin_volume(v[o[0]:, o[1]:, o[2]:], factor)
            to = CoordTable(to_binned(t.xyz - np.array(o[::-1], dtype=float), factor), t.classes, t.scores)
            d = TomogramData(vo, to, class_names, mask_diam, mask_type, name=f"train{i}+{o}")
            if split is not None:
                hold_out(d, holdout, reach, split=(split[0], split[1] - (1 if o[split[0]] else 0)))
            out.append(d)
    return out


def sample_batch(datasets, rng, patch, batch, n_classes, background_frac=0.3, jitter=None, augment=False,
                 max_angle=20.0):
    """Class-balanced patches around particles plus random background patches, mirrored
    (and, with ``augment``, rotated about z and intensity-jittered: :func:`augment_patch`).
    ``patch``: a side, or (z, y, x) sides for thin slabs (the slice network)."""
    size = np.array(patch if isinstance(patch, (tuple, list)) else (patch,) * 3, dtype=int)
    if jitter is None:      # a quarter of the patch (a scalar for cubes: the same random stream as before)
        jitter = size // 4 if isinstance(patch, (tuple, list)) else patch // 4
    xs, ys, offs, shapes = [], [], [], []
    present = sorted({c for d in datasets for c in d.cls.tolist() if c > 0})
    for _ in range(batch):
        d = datasets[rng.integers(len(datasets))]
        Z, Y, X = d.volume.shape
        if rng.random() >= background_frac and present:
            c = present[rng.integers(len(present))]
            cands = [(di, i) for di, dd in enumerate(datasets) for i in np.where(dd.cls == c)[0]]
            di, i = cands[rng.integers(len(cands))]
            d = datasets[di]
            Z, Y, X = d.volume.shape
            centre = d.table.xyz[i][::-1] + rng.integers(-jitter, jitter + 1, size=3)
        elif len(d.negatives) and rng.random() < 0.5:
            centre = d.negatives[rng.integers(len(d.negatives))] + rng.integers(-jitter, jitter + 1, size=3)
        else:
            centre = rng.uniform([0, 0, 0], [Z, Y, X])
        lo = np.clip(np.round(centre).astype(int) - size // 2, 0, np.maximum(np.array([Z, Y, X]) - size, 0))
        sl = tuple(slice(a, a + n) for a, n in zip(lo, size))
        v = d.volume[sl]
        lab = d.labels[(Ellipsis,) + sl]       # dense: (Z, Y, X) labels; sparse: (C, Z, Y, X) heatmaps
        lead = lab.ndim - 3
        if v.shape != tuple(size):
            # volume smaller than the patch: zeros (the normalised mean) beyond its end, as
            # picking completes a tile longer than the volume (pick._axis_tiles)
            padw = [(0, n - s) for s, n in zip(v.shape, size)]
            v = np.pad(v, padw)
            lab = np.pad(lab, [(0, 0)] * lead + padw, mode="constant")
        for ax in range(3):
            if rng.random() < 0.5:
                v = np.flip(v, ax)
                lab = np.flip(lab, ax + lead)
        if augment:
            v, lab = augment_patch(np.ascontiguousarray(v), np.ascontiguousarray(lab), rng, max_angle)
        xs.append(np.ascontiguousarray(v))
        ys.append(np.ascontiguousarray(lab))
        offs.append(tuple(lo))
        shapes.append(d.volume.shape)
    ys = np.stack(ys)
    return (torch.from_numpy(np.stack(xs)[:, None]),
            torch.from_numpy(ys if ys.dtype.kind == "f" else ys.astype(np.int64)), offs, shapes)


# ----------------------------------------------------------------------------------------
# validation and threshold calibration
# ----------------------------------------------------------------------------------------

# Score thresholds calibration chooses from. Topped at 0.9: with ties going to the higher
# value, a grid reaching 0.95 or 0.98 cost 0.01-0.10 F1 d >= 12 on the benchmark (README,
# *Model file*).
THRESHOLD_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def calibrate(probs_list, tables, class_names, diameters, grid=None, t_segs=(0.3, 0.5), smooth=0.25,
              label_diameters=None):
    """Thresholds (t_seg, per-class score) maximising validation F1; returns (thr, f1, mean class F1)."""
    grid = list(grid if grid is not None else THRESHOLD_GRID)
    best = (None, -1.0, 0.0)
    for ts in t_segs:
        preds = [find_particles(p, class_names, diameters, t_seg=ts, t_lm=0.05, smooth=smooth,
                                label_diameters=label_diameters) for p in probs_list]
        # per-class score threshold chosen independently (classes hardly interact after NMS)
        thr = {}
        absent = [c for c in class_names
                  if not any((ref.classes == c).any() if ref.classes is not None else len(ref) for ref in tables)]
        for c in class_names:
            if c in absent:
                continue
            best_c, best_f = grid[0], -1.0
            for g in grid:
                tp = fp = fn = 0
                for pred, ref in zip(preds, tables):
                    pi = (pred.classes == c) & (pred.scores >= g) if len(pred) else np.zeros(0, bool)
                    ri = ref.classes == c if ref.classes is not None else np.ones(len(ref), bool)
                    # counts only: the matching step of evaluate(), same radius (0.5 x diameter)
                    n_tp = len(match(pred.xyz[pi], ref.xyz[ri], np.full(int(ri.sum()), 0.5 * diameters[c]))[0])
                    tp += n_tp
                    fp += int(pi.sum()) - n_tp
                    fn += int(ri.sum()) - n_tp
                f = 2 * tp / max(2 * tp + fp + fn, 1)
                # ties go to the higher threshold: calibrating on the training tomogram (no
                # validation tomogram) ties over a wide range, and on unseen tomograms
                # crowders score higher than on the fitted one; over six simulated variants
                # (SNR 0.02-0.2, ±45° tilts, 300 crowders, one species, inverted contrast)
                # test F1 rose in every one (barrel alone 0.83 → 0.92) against the lowest
                if f >= best_f:
                    best_c, best_f = g, f
            thr[c] = best_c
        # a class without validation particles: every threshold scores 0; take the others' median
        for c in absent:
            thr[c] = float(np.median(list(thr.values()))) if thr else 0.5
        f1s, cf1s = [], []
        for pred, ref in zip(preds, tables):
            keep = np.array([s >= thr[c] for c, s in zip(pred.classes, pred.scores)], dtype=bool)
            r = evaluate(pred.subset(np.where(keep)[0]), ref, diameters)
            f1s.append(r["f1"])
            cf1s.append(r.get("mean_class_f1") or 0.0)
        f = float(np.mean(f1s))
        if f > best[1]:
            best = ({"t_seg": ts, "class": thr}, f, float(np.mean(cf1s)))
    return best


# ----------------------------------------------------------------------------------------
# training loop
# ----------------------------------------------------------------------------------------

AUTO_BIN_MIN_DIAMETER = 16.0
AUTO_BIN_MIN_DIAMETER_CPU = 8.0
AUTO_BIN_MAX_DIAMETER_CPU = 12.0
AUTO_BIN4_MIN_DIAMETER_CPU = 24.0


def _auto_or(value, flag, convert, kind):
    """None for 'auto' (or nothing given), else ``convert(value)``; a one-line error otherwise."""
    if value is None or str(value) == "auto":
        return None
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise InputError(f"{flag}: '{value}' must be {kind} or auto") from None


def float_or_auto(value, flag):
    """A positive number, or None for 'auto' (the engine chooses: --lr)."""
    number = _auto_or(value, flag, float, "a number")
    if number is not None and not number > 0:
        raise InputError(f"{flag}: {number} must be above 0 (or auto)")
    return number


def int_or_auto(value, flag):
    """A positive integer, or None for 'auto' (the engine chooses: --bin, --patch, --batch)."""
    number = _auto_or(value, flag, int, "a positive integer")
    if number is not None and number < 1:
        raise InputError(f"{flag}: {number} must be 1 or more (or auto)")
    return number


def auto_bin(diameters, device="cpu"):
    """The binning ``--bin auto`` chooses: 2 when every class is at least
    ``AUTO_BIN_MIN_DIAMETER`` voxels across (8 or more after binning); on a CPU 4 when every
    class is at least ``AUTO_BIN4_MIN_DIAMETER_CPU`` (6 or more after binning), else 2 when
    every class is at least ``AUTO_BIN_MIN_DIAMETER_CPU`` (4 or more after binning) or the
    largest is at least ``AUTO_BIN_MAX_DIAMETER_CPU`` (6 or more after binning); else 1.

    On the 10-minute CPU benchmark, bin 2 buys 8x fewer voxels per step, hence many more
    steps and more context per patch, and found the large species with F1 0.87-0.91; a
    species of 8 voxels (4 after binning) was never found at bin 2. Neither was it at bin 1
    within the CPU budget, where every other species lost too (F1 d >= 12 0.54 against 0.78,
    mean class F1 0.30 against 0.57; in bfloat16 0.19 and 0.14): a CPU cannot train a
    full-resolution network long enough. The same held with a class under 8 voxels (the
    simulator at 14 A/voxel: 18, 13, 9, 18 and 6 voxels, 6 minutes): bin 1 F1 0.41, mean class
    F1 0.27; bin 2 0.43 / 0.42 (barrel 0.71 against 0.36, rod 0.40 against 0.00; the 9- and
    6-voxel species 0.15 and 0.00 either way). So on a CPU only sets of small particles alone
    (all under 12 voxels, some under 8) keep bin 1. Large particles gain from bin 4 (the
    simulator at 4 A/voxel without `tiny`: 59, 39, 27 and 57 voxels, 6 minutes, one held-out
    tomogram): F1 0.88 at both bins, mean class F1 0.81 at bin 4 against 0.48 at bin 2, where
    the 39-voxel barrel was never told from the rest (F1 0.00 against 0.92). On a GPU (hours
    of steps) particles under 16 voxels stay at full resolution.
    """
    sizes = [float(d) for d in diameters]
    if torch.device(device).type == "cpu":
        if min(sizes) >= AUTO_BIN4_MIN_DIAMETER_CPU:
            return 4
        if min(sizes) >= AUTO_BIN_MIN_DIAMETER_CPU or max(sizes) >= AUTO_BIN_MAX_DIAMETER_CPU:
            return 2
    return 2 if min(sizes) >= AUTO_BIN_MIN_DIAMETER else 1


def auto_patch(network_diameters, sparse=False):
    """(patch, batch) when ``train`` is not given them.

    Complete labels: the smallest multiple of 8 that is at least 32 and holds the largest
    particle plus 8 voxels of context, in batches of 8 (4 above 32). On the 10-minute CPU
    benchmark (bin 2, [8,16,24,36], two training seeds) 32³ patches in batches of 8 against
    48³ in batches of 4: 24-26 epochs instead of 16 in the same time; on the training tomogram
    itself F1 d >= 12 0.92 / 0.86 vs 0.74 / 0.77 (class F1 0.78 / 0.74 vs 0.62 / 0.62), best
    validation F1 0.65 / 0.62 vs 0.60 / 0.53, test F1 d >= 12 0.76 / 0.70 vs 0.68 / 0.75 and
    class F1 0.59 / 0.50 vs 0.53 / 0.50. With 48³ patches the network had not even fitted its
    training data; a smaller patch centred on a particle holds a larger share of labelled
    voxels (32³ at bin 2 is DeepETPicker's recommended minimum N = 64, seed 000 §A.8).
    Sparse labels keep 48³ in batches of 4 (their benchmark was measured so)."""
    if sparse:
        return 48, auto_batch(48, sparse)
    largest = max(float(d) for d in network_diameters)
    patch = max(32, 8 * int(math.ceil((largest + 8) / 8.0)))
    return patch, auto_batch(patch, sparse)


def default_lr(sparse=False):
    """Peak learning rate when none is given: 3e-3 for complete labels, 1e-3 for sparse ones.

    1e-3 is the sparse-label paper's (seed 002 §4.2). On the PU benchmark (barrel, 10 %
    labels, 10 minutes, two training seeds) it gave test F1 0.761 / 0.789 (AP 0.69 / 0.77)
    against 0.678 / 0.768 (AP 0.59 / 0.71) at 3e-3: five positives are memorised quickly
    (the PU loss is ~1e-4 after a few epochs) and a gentler rate overfits them less."""
    return 1e-3 if sparse else 3e-3


def default_rotation(sparse=False):
    """Largest augmentation rotation about z (degrees) when none is given: 20 for complete
    labels, any angle (180) for sparse ones.

    Rotating about the beam axis turns the missing wedge with the particle, so the network
    sees wedges where real data never have them; small angles keep it close. With a handful
    of annotated particles the trade goes the other way: on the PU benchmark (barrel, 10 %
    labels = 5 particles, 10 minutes, two training seeds) any in-plane angle gave test F1
    0.851 / 0.844 (AP 0.82 / 0.85) against 0.761-0.789 (AP 0.69-0.77) at 20 degrees, and
    validation F1 0.86 against 0.70. With complete labels (a whole annotated tomogram) any
    angle lost: issue-3 benchmark, 7 test tomograms, F1 d >= 12 0.72 against 0.78, mean class
    F1 0.56 against 0.59."""
    return 180.0 if sparse else 20.0


def auto_batch(patch, sparse=False, depth=None):
    """The batch ``--batch auto`` takes for a given patch, also when the patch is explicit:
    8 for patches of at most 32 voxels with complete labels, else 4 (see ``auto_patch``);
    slabs ``depth`` voxels thick hold the voxels of that many cubes in more, thinner patches."""
    cubes = 8 if patch <= 32 and not sparse else 4
    return cubes * max(1, patch // depth) if depth else cubes


# slab thickness of the slice network's training patches: its 3-D fusion block sees 5
# slices (two 3x3x3 convolutions; seed 002 §4.2 trains on 64 x 64 x 5 crops), so thin slabs
# waste little and the same voxels cover three times as many particles as cubes
SLICE_PATCH_DEPTH = 16


def train(train_vols, train_tables, class_names, diameters, out_path, val_vols=(), val_tables=(),
          voxel_size=10.0, epochs=20, iters_per_epoch=40, minutes=None, patch=None, batch=None,
          channels=(8, 16, 24, 36), loss=None, mask_type="tball", lr=None, seed=0,
          device="cpu", resume=False, tile=128, pad=12, log=print, stop_after_epoch=None, bin=1, flips=1,
          augment=True, labels="complete", prior=None, expected_particles=None, min_mask=None, coord_conv="z",
          ema=0.99, mask_diameter=None, consistency=0.0, network="resunet3d", patch_depth=None,
          contrastive=0.0, rotation=None, precision="auto", holdout=0.0, bin_phases=None, init=None,
          max_mask_ratio=None):
    """Train a picker; writes ``out_path`` (best model) and ``out_path + '.ckpt'`` (last state).

    ``loss`` defaults to dice+ce for complete labels.
    ``labels="sparse"``: the coordinates are a subset of the particles; trains a heatmap head
    with the PU loss (``loss="pu"``, default) or, as a baseline, treating unlabeled voxels as
    negatives (``loss="pn"``). The class prior is ``prior`` (fraction of positive voxels)
    or derived from ``expected_particles`` per tomogram (:mod:`picker3d.engine.pu`).

    ``bin`` > 1 trains (and later picks) on the tomograms binned by that factor (``"auto"``:
    :func:`auto_bin`): 8x fewer voxels per bin-2 step, which on a CPU budget buys many more
    iterations for particles that stay >= ~6 voxels across after binning. ``flips`` is the test-time mirroring used
    for validation and stored for picking (1, 2, 4 or 8). ``min_mask`` is the smallest label
    diameter in network voxels (small species binned away get a blob this wide); default 9
    for complete labels (the issue-3 experiment's minimum mask and DeepETPicker's Const9: on
    the 10-minute benchmark test F1 0.60 vs 0.54, F1 d >= 12 0.76 vs 0.68, class F1 0.53 vs
    0.50, precision 0.79 vs 0.59, against a minimum of 3) and 3 for sparse labels.
    ``max_mask_ratio`` caps that growth: no label is wider than this multiple of its class's
    own diameter (None: :data:`DEFAULT_MAX_MASK_RATIO`; 0: no cap). See :func:`label_diameters`.

    ``coord_conv`` (see :class:`ResUNet3D`): ``"z"`` (default) gives the network the depth in
    the tomogram only. With DeepETPicker's x, y, z (``True``) a network trained on one
    tomogram can tie targets to places; on the 10-minute benchmark depth only gave test F1
    0.51 vs 0.48 and mean class F1 0.38 vs 0.32 (2 flips; 4 flips: 0.55 / 0.39).

    ``ema`` (0 = off): validation, the kept model and picking use an exponential moving
    average of the weights (Polyak averaging, decay per step) instead of the last step's.

    ``lr``: the peak of the one-cycle schedule; None takes :func:`default_lr`.

    ``consistency`` (0 = off): weight of the consistency term of seed 002 (Eq. 14, lambda_3 =
    0.1 there), the mean squared difference between the output probabilities of each batch and
    of a mirrored, re-noised view of it (:func:`consistency_view`); each step then runs the
    network twice.

    ``contrastive`` (0 = off; sparse labels only): weight lambda_1 of seed 002's voxel-level
    debiased contrastive module (Eq. 8-13, :func:`picker3d.engine.pu.contrastive_loss`; 0.1
    there) on a 32-dimensional linear projection of the last feature map, between a batch and
    the same mirrored, re-noised view the consistency term uses (one more network pass per
    step; the projection is trained with the network and kept in the checkpoint only).

    ``rotation``: the largest rotation about the beam axis (z) of the augmentation, in degrees
    (:func:`augment_patch`); None takes :func:`default_rotation` (20 for complete labels,
    which keeps the missing wedge close to where the data have it; 180 for sparse ones).

    ``network``: ``"resunet3d"`` (default) or ``"slice2d"``, the sparse-label paper's 2-D slice
    encoder fused by 3-D layers (:class:`picker3d.engine.network.SliceUNet`), which trains on
    slabs ``patch_depth`` voxels thick (default :data:`SLICE_PATCH_DEPTH`; the 3-D network's
    patches are cubes unless ``patch_depth`` is given, a multiple of 8).

    Without validation tomograms the training tomograms choose the epoch and calibrate the
    thresholds (complete labels; sparse ones then keep the last epoch, uncalibrated), or, with
    ``holdout`` > 0, that fraction of each training tomogram, not trained on (:func:`hold_out`).
    Measured on the 10-minute benchmark without its validation tomogram (7 test tomograms, 2
    flips): holdout 0.25 gave test F1 d >= 12 0.68, mean class F1 0.50; calibrating on the
    training tomogram 0.75 / 0.54 (with the validation tomogram 0.78 / 0.56): a quarter less
    training data and ~25 validation particles cost more than thresholds fitted to memorised
    data. Hence 0 by default; a separate validation tomogram is best.

    ``bin_phases`` (complete labels, ``bin`` > 1): the training tomograms are also binned from
    block grids shifted by half a block on any of the three axes (:func:`binning_phase_copies`;
    8 grids in all), so every annotated particle is seen with other noise averaged into each
    binned voxel and at other sub-voxel positions — more views of the same few particles at no
    cost per step. Validation and picking use the unshifted grid. ``None`` (default): on, or
    what the interrupted run recorded in its checkpoint when resuming.

    ``init``: a picker3d model file to start from instead of random weights (fine-tuning:
    a model trained on other tomograms, or on other species, continues on these annotations;
    :func:`initialise_from`). The architecture (network, channels, coord-conv, label kind) must
    be the same; the output layer is kept only when the class list is the same. Ignored when
    resuming (the checkpoint holds the weights).

    ``precision``: arithmetic of the forward and backward passes and of validation
    (:func:`picker3d.engine.network.autocast_dtype`): ``auto`` takes bfloat16 on a CPU that
    computes it natively (1.45x the steps in a time budget, validation 3x faster), float32
    weights, optimiser and losses always.
    """
    for c in class_names:
        diameter_of(diameters, c)
    if labels not in ("complete", "sparse"):
        raise InputError(f"--labels: '{labels}' must be complete or sparse")
    sparse = labels == "sparse"
    if sparse and loss not in ("pu", "pn"):
        loss = "pu"
    loss = loss or "dice+ce"
    if not sparse and loss in ("pu", "pn"):
        raise InputError(f"--loss: '{loss}' needs --labels sparse")
    if sparse and loss == "pu" and prior is None and not expected_particles:
        raise InputError("--prior: sparse labels need the class prior (--prior PI or --expected-particles N)")
    if prior is not None and not 0 < prior < 1:
        raise InputError(f"--prior: {prior} must be a fraction of voxels between 0 and 1")
    if patch is not None and patch % 8:
        raise InputError(f"--patch: {patch} is not a multiple of 8")
    if not 0 <= ema < 1:
        raise InputError(f"--ema: {ema} must be a decay in [0, 1) (0 = off)")
    if network not in NETWORKS:
        raise InputError(f"--network: '{network}' must be one of {', '.join(NETWORKS)}")
    if patch_depth is not None and (int(patch_depth) < 1 or (network == "resunet3d" and int(patch_depth) % 8)):
        raise InputError(f"--patch-depth: {patch_depth} must be a positive number of slices"
                         + (" and a multiple of 8 for resunet3d" if network == "resunet3d" else ""))
    if not consistency >= 0:
        raise InputError(f"--consistency: {consistency} must be a weight of 0 (off) or more")
    rotation = default_rotation(sparse) if rotation is None else float(rotation)
    if not 0 <= rotation <= 180:
        raise InputError(f"--rotation: {rotation} must be an angle between 0 and 180 degrees")
    if not contrastive >= 0:
        raise InputError(f"--contrastive: {contrastive} must be a weight of 0 (off) or more")
    if contrastive and not sparse:
        raise InputError("--contrastive: the contrastive module needs --labels sparse")
    lr = default_lr(sparse) if lr is None else float(lr)
    if not 0 < lr < 1:
        raise InputError(f"--lr: {lr} must be a learning rate between 0 and 1 (or auto)")
    if not 0 <= holdout < 0.5:
        raise InputError(f"--holdout: {holdout} must be a fraction in [0, 0.5) (0 = calibrate on the training data)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    amp = autocast_dtype(dev, precision, training=True)
    n_classes = len(class_names)
    diam = {c: float(diameter_of(diameters, c)) for c in class_names}
    bin = int_or_auto(bin, "--bin")
    if bin is None:
        bin = auto_bin(diam.values(), dev)
        log(f"binning {bin} (auto: smallest diameter {min(diam.values()):g} voxels, {dev.type}; --bin 1 keeps "
            f"full resolution)")
    # network space: binned volumes, coordinates and diameters (masks at least 3 voxels wide)
    diam_b = {c: diam[c] / bin for c in class_names}
    if min_mask is None:
        min_mask = 3.0 if sparse else 9.0
    max_mask_ratio = DEFAULT_MAX_MASK_RATIO if max_mask_ratio is None else float(max_mask_ratio)
    if max_mask_ratio and not max_mask_ratio >= 1:
        raise InputError(f"--max-mask-ratio: {max_mask_ratio:g} must be 1 or more (0 = no cap)")
    if mask_diameter is not None and not float(mask_diameter) >= 1:
        raise InputError(f"--mask-diameter: {mask_diameter} must be 1 voxel or more")
    if mask_diameter is not None:
        # DeepETPicker's constant-diameter weak labels (seed 000 §A.3, Supp. Table 2: Const7 / Const9)
        mask_diam = {c: float(mask_diameter) for c in class_names}
    else:
        mask_diam = label_diameters(diam_b, min_mask, max_mask_ratio)
    ckpt_path = out_path + ".ckpt"
    # a run killed while writing left its temporaries beside the outputs: this run owns them
    remove_stale_temporaries(out_path, ".pt")
    remove_stale_temporaries(ckpt_path, ".ckpt")
    ck = torch.load(ckpt_path, map_location=dev, weights_only=False) if resume and os.path.exists(ckpt_path) else None
    if ck is not None and ck.get("network", "resunet3d") != network:
        raise InputError(f"--network: the checkpoint {ckpt_path} was trained with --network "
                         f"{ck.get('network', 'resunet3d')}, not {network}")
    resumed = ck is not None and (patch is None or batch is None)
    if resumed:
        # resume with the patches the interrupted run used (checkpoints written before the
        # automatic choice do not record them: those runs used 48 x 4)
        patch = ck.get("patch", 48) if patch is None else patch
        batch = ck.get("batch", 4) if batch is None else batch
        patch_depth = ck.get("patch_depth") if patch_depth is None else patch_depth
    if patch_depth is None and network == "slice2d":
        patch_depth = SLICE_PATCH_DEPTH
    if patch is None or batch is None:
        patch = auto_patch(diam_b.values(), sparse)[0] if patch is None else patch
        batch = auto_batch(patch, sparse, patch_depth) if batch is None else batch
    depth = int(patch_depth) if patch_depth else patch
    shape = f"{patch}³" if depth == patch else f"{depth}x{patch}x{patch} (z, y, x)"
    log(f"patches {shape} in batches of {batch}" + (" (as the interrupted run)" if resumed else ""))
    big = max(class_names, key=lambda c: diam_b[c])
    # binned shapes without binning: bin_volume crops to a multiple of the factor
    smallest = min((tuple(n // bin for n in np.shape(v)) for v in train_vols), key=min)
    if diam_b[big] >= min(smallest):
        raise InputError(f"--diameters: class {big} is {diam[big]:g} voxels ({diam_b[big]:g} at bin {bin}), not "
                         f"smaller than the training tomogram ({'x'.join(map(str, smallest))} at bin {bin}): "
                         f"check the diameters' unit (voxels of the tomograms)")
    if diam_b[big] > tile - 2 * pad:
        raise InputError(f"--diameters: class {big} is {diam[big]:g} voxels ({diam_b[big]:g} at bin {bin}), larger "
                         f"than the {tile - 2 * pad} voxels a tile of {tile} keeps after its {pad}-voxel padding: "
                         f"raise --tile or --bin")
    if diam_b[big] > patch:
        raise InputError(f"--patch: {patch} voxels cannot hold class {big} ({diam_b[big]:g} voxels at bin {bin}): "
                         f"raise --patch or --bin")

    def binned_table(t):
        return CoordTable(to_binned(t.xyz, bin), t.classes, t.scores)

    full_vols, full_tables = train_vols, train_tables
    train_tables = [binned_table(t) for t in train_tables]
    val_tables = [binned_table(t) for t in val_tables]
    train_vols = [bin_volume(v, bin) for v in train_vols]
    # normalised once here, as the training volumes are (TomogramData): validation then predicts
    # with stats=NORMALISED instead of estimating every volume's statistics again each epoch
    val_vols = [normalize(bin_volume(v, bin)) for v in val_vols]
    data = [TomogramData(v, t, class_names, mask_diam, mask_type, name=f"train{i}", sparse=sparse)
            for i, (v, t) in enumerate(zip(train_vols, train_tables))]
    held_out = False
    # how far before a hold-out cut a particle may be centred and still reach across it
    holdout_reach = max(max(diam_b.values()) / 2, 8.0)
    if not val_vols and not sparse:
        if holdout:
            parts = [hold_out(d, float(holdout), holdout_reach) for d in data]
            if all(p is not None for p in parts):
                held_out = True
                val_vols, val_tables = [p[0] for p in parts], [p[1] for p in parts]
                log(f"no validation tomograms: {holdout:g} of each training tomogram held out to choose the "
                    f"epoch and calibrate the thresholds ({sum(len(t) for t in val_tables)} particles)")
                left = {c for d in data for c in d.cls.tolist()}
                gone = [c for i, c in enumerate(class_names, start=1) if i not in left]
                if gone:
                    log(f"warning: --holdout: every annotated {', '.join(gone)} particle lies in the held-out "
                        f"part; the network will not learn {'it' if len(gone) == 1 else 'them'}")
            else:
                log("no validation tomograms and the training tomograms are too small to hold a part out: "
                    "the training tomograms calibrate the thresholds")
        if not val_vols:
            if not holdout:
                log("no validation tomograms: the training tomograms choose the epoch and calibrate the thresholds")
            val_vols, val_tables = [d.volume for d in data], [d.table for d in data]
    if bin_phases is None:
        # not given: as the interrupted run (checkpoints written before the flag was recorded
        # come from runs with the default, on), else on
        bin_phases = ck.get("bin_phases", True) if ck is not None else True
    bin_phases = bool(bin_phases) and bin > 1 and not sparse
    if ck is not None and ck.get("bin_phases", bin_phases) != bin_phases:
        log(f"warning: --{'' if bin_phases else 'no-'}bin-phases differs from the interrupted run "
            f"({ckpt_path}); the resumed run follows the command line")
    if bin_phases:
        data += binning_phase_copies(full_vols, full_tables, bin, class_names, mask_diam, mask_type,
                                     holdout if held_out else 0.0, holdout_reach)
        log(f"binning phases: {len(data)} training volumes ({bin}x-binned from {len(full_vols)} tomogram(s) at "
            f"{len(data) // len(full_vols)} grid offsets)")
    priors = None
    if sparse and loss == "pu":
        if prior is None:
            prior = prior_from_counts(expected_particles, train_tables, class_names, mask_diam, train_vols[0].shape)
            log(f"class prior {prior:.3e} from {expected_particles:g} particles per tomogram")
        for d in data:
            msg = check_prior(prior, d.labels.max(axis=0))
            if msg:
                log(f"warning: {d.name}: {msg}")
        priors = class_priors(prior, train_tables, class_names)
    annotated = {c for t in train_tables if t.classes is not None for c in t.classes.tolist()}
    missing = [c for c in class_names if c not in annotated]
    if missing and len(class_names) > 1:
        raise InputError(f"--diameters: class(es) {', '.join(missing)} have no annotation in the training coordinates")
    model = build_network({"network": network, "n_classes": n_classes, "channels": channels,
                           "heatmap": sparse, "coord_conv": coord_conv}).to(dev)
    init_info = ck.get("init") if ck is not None else None    # a resumed run keeps its provenance
    if init is not None:
        if ck is not None:
            log(f"--init {init}: ignored, resuming from the checkpoint {ckpt_path}")
        else:
            init_info = initialise_from(model, init, class_names, voxel_size * bin, dev, log)
    averaged = WeightAverage(model, ema) if ema else None
    # the contrastive module's projection head (seed 002 Fig. 2b; a 1x1x1 convolution, i.e. a
    # linear map per voxel); not part of the picking model
    projection = torch.nn.Linear(channels[0], 32).to(dev) if contrastive else None
    trained = list(model.parameters()) + (list(projection.parameters()) if projection is not None else [])
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=1e-4)
    total_steps = epochs * iters_per_epoch
    step, train_seconds = 0, 0.0
    # background voxels dominate: weight CE classes by inverse frequency (capped)
    class_weight = None
    if not sparse:
        counts = np.bincount(np.concatenate([d.labels.ravel()[::7] for d in data]), minlength=n_classes + 1)
        w = (counts.sum() / np.maximum(counts, 1)) ** 0.5
        class_weight = torch.tensor(np.minimum(w / w[0], 20.0), dtype=torch.float32, device=dev)
    history, best_f1, best_state, best_thr, start_epoch = [], -1.0, None, None, 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        if (ck.get("projection") is None) != (projection is None):
            raise InputError(f"--contrastive: the checkpoint {ckpt_path} was trained "
                             f"{'without' if projection is not None else 'with'} it: resume with the same setting")
        if projection is not None:
            projection.load_state_dict(ck["projection"])
        opt.load_state_dict(ck["opt"])
        step, train_seconds = ck["step"], ck["train_seconds"]
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        history, best_f1, best_state, best_thr = ck["history"], ck["best_f1"], ck["best_state"], ck["best_thr"]
        if averaged is not None:
            if ck.get("ema") is not None:
                averaged.load_state_dict(ck["ema"])
            else:       # a checkpoint written without averaging: start the average here
                averaged = WeightAverage(model, ema)
        start_epoch = ck["epoch"] + 1
        log(f"resuming from epoch {start_epoch} ({ckpt_path})")
    val_probs_needed = bool(val_vols)
    t_start = time.time() - train_seconds
    meta_base = {"classes": list(class_names), "diameters": diam, "voxel_size": float(voxel_size),
                 "normalization": "per-tomogram zero mean, unit std (robust: fill value and 0.5 % tails "
                                  "left out), clipped at +-3", "mask": mask_type, "loss": loss,
                 "lr": lr, "consistency": float(consistency), "contrastive": float(contrastive),
                 "rotation": float(rotation), "precision": str(amp).replace("torch.", "") if amp else "float32",
                 "patch": patch, "patch_depth": depth, "batch": batch, "network": network, "tile": tile,
                 "pad": pad, "bin": bin, "flips": flips, "augment": bool(augment),
                 "labels": labels, "prior": prior, "min_mask": float(min_mask),
                 "max_mask_ratio": max_mask_ratio, "ema": float(ema),
                 "bin_phases": bin_phases, "init": init_info,
                 "label_diameters": dict(mask_diam), "peak_smoothing": default_peak_smoothing(sparse),
                 "versions": {"torch": torch.__version__, "numpy": np.__version__,
                              "python": platform.python_version(), "picker3d": _version()}}
    for epoch in range(start_epoch, epochs):
        model.train()
        losses = []
        t_epoch = time.time()
        for _ in range(iters_per_epoch):
            x, y, offs, shapes = sample_batch(data, rng, (depth, patch, patch) if depth != patch else patch,
                                              batch, n_classes, augment=augment, max_angle=rotation)
            x, y = x.to(dev), y.to(dev)
            # coord-conv: one offset per patch
            with autocast(dev, amp):
                logits, feats = model(x, offset=offs, full_shape=shapes, features=True)
            logits, feats = logits.float(), feats.float()
            lval = compute_loss(loss, logits, y, n_classes, class_weight, priors)
            if consistency or contrastive:
                view, dims = consistency_view(x, rng)
                with autocast(dev, amp):
                    view_logits, view_feats = model(view, offset=offs, full_shape=shapes, features=True)
                view_logits, view_feats = view_logits.float(), view_feats.float()
            if consistency:
                lval = lval + consistency * consistency_loss(logits, view_logits, dims, sparse)
            if contrastive:
                # the pn baseline has no class prior: 1 % stands in for the debiasing
                pis = priors if priors is not None else [0.01] * n_classes
                lval = lval + contrastive * contrastive_term(projection, feats, view_feats, dims, y, logits, pis, rng)
            opt.zero_grad(set_to_none=True)
            lval.backward()
            # one-cycle position: by steps, or by elapsed time when a time budget is given
            # (the number of steps that fit in the budget is not known in advance)
            frac = step / total_steps if minutes is None else (time.time() - t_start) / (60.0 * minutes)
            for group in opt.param_groups:
                group["lr"] = one_cycle_lr(frac, lr)
            opt.step()
            if averaged is not None:
                averaged.update(model, step)
            step += 1
            losses.append(float(lval.detach()))
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_s": round(time.time() - t_epoch, 1)}
        t_val = time.time()
        evaluated = averaged.model if averaged is not None else model
        if val_probs_needed:
            probs = [predict_volume(evaluated, v, tile=tile, pad=pad, device=device, flips=flips,
                                    stats=NORMALISED, precision=precision) for v in val_vols]
            thr, f1, cf1 = calibrate(probs, list(val_tables), class_names, diam_b,
                                     t_segs=(0.1, 0.3, 0.5) if sparse else (0.3, 0.5),
                                     smooth=peak_smoothing(meta_base), label_diameters=mask_diam)
            entry.update(val_f1=f1, val_class_f1=cf1)
            if f1 >= best_f1:     # the later of equal epochs: further along the one-cycle annealing
                best_f1, best_thr = f1, thr
                best_state = copy.deepcopy(evaluated.state_dict())
        else:
            best_state, best_thr = copy.deepcopy(evaluated.state_dict()), None
        entry["val_s"] = round(time.time() - t_val, 1)
        elapsed = time.time() - t_start
        history.append(entry)
        epoch_s = (elapsed - train_seconds) / (epoch + 1 - start_epoch)   # this session's mean epoch time
        if minutes is None:
            eta, of = epoch_s * (epochs - epoch - 1), f"/{epochs}"
        else:
            eta, of = max(60.0 * minutes - elapsed, 0.0), f" (budget {minutes:g} min)"
        vtxt = f"  val F1 {entry['val_f1']:.3f}  class F1 {entry['val_class_f1']:.3f}" if "val_f1" in entry else ""
        log(f"epoch {epoch + 1}{of}  loss {entry['loss']:.4f}{vtxt}  (train {entry['train_s']:.0f}s, "
            f"validation {entry['val_s']:.0f}s)  elapsed {elapsed:.0f}s  ETA {eta:.0f}s")
        with atomic_write(ckpt_path, ".ckpt") as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "train_seconds": elapsed, "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(), "history": history, "best_f1": best_f1,
                        "best_state": best_state, "best_thr": best_thr, "epoch": epoch,
                        "ema": averaged.state_dict() if averaged is not None else None, "patch": patch,
                        "batch": batch, "patch_depth": patch_depth, "network": network,  # patch_depth None: cubes
                        "bin_phases": bin_phases, "init": meta_base["init"],
                        "projection": projection.state_dict() if projection is not None else None}, tmp)
        final = copy.deepcopy(model)
        final.load_state_dict(best_state)
        save_model(out_path, final, dict(meta_base, thresholds=best_thr, history=history,
                                         best_val_f1=best_f1 if val_probs_needed else None,
                                         parameters=count_parameters(model)))
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
        if minutes is not None and elapsed + epoch_s > 60.0 * minutes:
            log(f"time budget of {minutes} min reached after epoch {epoch + 1}")
            break
    log(kept_summary(history, best_thr))
    return out_path


# The widest a weak label may grow over its class's own diameter (--max-mask-ratio; 0 = no cap).
DEFAULT_MAX_MASK_RATIO = 1.5


def label_diameters(diameters, min_mask, max_mask_ratio=DEFAULT_MAX_MASK_RATIO):
    """Weak-label diameter of each class (network voxels): its own diameter, raised to at
    least ``min_mask`` and, when ``max_mask_ratio`` is not 0, to at most that multiple of its
    own diameter.

    The minimum helps classes that binning leaves a few voxels wide (measured: 9 against 3);
    the cap keeps the smallest class's label from growing past its neighbours' sizes: at bin 2
    the benchmark's 8-voxel `tiny` (4 network voxels) had a 9-voxel label, wider than the
    12-voxel `shell` itself; capped at 1.5x it gets 6, every other class keeps its label
    (docs/picking_measurements.md, *Label cap*).
    """
    out = {}
    for c, d in diameters.items():
        grown = max(float(d), float(min_mask))
        out[c] = min(grown, max_mask_ratio * float(d)) if max_mask_ratio else grown
    return out


def initialise_from(model, path, class_names, network_voxel_size, device, log=print):
    """Copy a model file's weights into ``model`` (the start of a fine-tuning run).

    Every layer is taken from the file; the output layer only when the file was trained
    for the same classes in the same order (other classes get a new, randomly initialised
    output layer). Returns the provenance recorded in the new model file. Raises InputError
    naming the file when its architecture differs from this run's.
    """
    source, meta = load_model(path, device=device)
    # the 3-D ResUNet's config has no "network" key; the class count may differ (new head)
    own = dict({"network": "resunet3d"}, **model.config)
    theirs = dict({"network": "resunet3d"}, **source.config)
    flags = {"network": "--network", "channels": "--channels", "coord_conv": "--coord-conv", "heatmap": "--labels"}
    for key in sorted(set(own) | set(theirs), key=lambda k: (k not in flags, k)):
        if key != "n_classes" and own.get(key) != theirs.get(key):
            flag = flags.get(key, f"network setting '{key}'")
            raise InputError(f"--init: {path} was trained with {flag} {_arch_value(key, theirs.get(key))}, this run "
                             f"uses {_arch_value(key, own.get(key))}: give the same {flag} or train from scratch")
    same_classes = list(meta.get("classes", [])) == list(class_names)
    state = source.state_dict()
    if not same_classes:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    # the architectures are equal (checked above): only a dropped output layer leaves keys unset
    model.load_state_dict(state, strict=same_classes)
    theirs_voxel = float(meta.get("voxel_size") or 0) * int(meta.get("bin", 1))
    if theirs_voxel and abs(theirs_voxel - network_voxel_size) / theirs_voxel > 0.05:
        log(f"warning: --init: {path} saw {theirs_voxel:.2f} Å per network voxel, this run "
            f"{network_voxel_size:.2f}: features tuned to other particle sizes in voxels")
    log(f"starting from {path} (classes {', '.join(meta.get('classes', []))}): "
        + ("every layer kept" if same_classes else f"new output layer for {', '.join(class_names)}"))
    return {"path": os.path.abspath(path), "classes": list(meta.get("classes", [])),
            "output_layer_kept": same_classes}


def _arch_value(key, value):
    if key == "heatmap":
        return "sparse" if value else "complete"
    if key == "channels":
        return ",".join(map(str, value))
    return {True: "xyz", False: "none"}.get(value, value)


class WeightAverage:
    """Exponential moving average of a network's weights and BatchNorm statistics.

    The decay ramps up as (1 + step) / (10 + step) until it reaches ``decay``, so early
    averages are not dominated by the random initialisation. The averaged copy is what
    validation sees and what is kept: with one annotated tomogram the last step's weights
    swing from epoch to epoch (validation F1 moved by ±0.05 between neighbouring epochs).
    """

    def __init__(self, model, decay=0.99):
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model, step):
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        live = model.state_dict()
        for name, avg in self.model.state_dict().items():
            if avg.dtype.is_floating_point:
                avg.lerp_(live[name], 1.0 - d)
            else:
                avg.copy_(live[name])

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)


def one_cycle_lr(frac, max_lr, warmup=0.2, div=25.0, final_div=1e4):
    """One-cycle learning rate at training fraction ``frac``: cosine warm-up from
    max_lr/div to max_lr over the first ``warmup`` share, then cosine decay to
    max_lr/final_div (the shape of torch's OneCycleLR, defined by fraction so that a time
    budget can drive it)."""
    frac = min(max(frac, 0.0), 1.0)
    if frac < warmup:
        lo, hi, t = max_lr / div, max_lr, frac / warmup
    else:
        lo, hi, t = max_lr, max_lr / final_div, (frac - warmup) / (1.0 - warmup)
    return hi + (lo - hi) * (1 + math.cos(math.pi * t)) / 2


def _version():
    try:
        from picker3d import __version__
        return __version__
    except Exception:
        return "unknown"


__all__ = ["train", "load_model", "save_model", "calibrate", "compute_loss", "auto_bin", "int_or_auto"]
