"""Training data: normalised tomograms with their weak labels and hard negatives, the
validation volumes (or a held-out part), the shifted binning grids, and batch sampling."""
import itertools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InputError
from ..formats.table import CoordTable
from ..masks import label_mask
from ..picking.specimen import polarity_skew
from ..pu import centre_heatmaps, check_prior, class_priors, positive_voxels_per_particle, prior_from_counts
from ..volume import bin_volume, network_input, to_binned


class TomogramData:
    """One training tomogram: normalised volume, label mask, particle table, hard negatives.

    Hard negatives are places of strong density (either contrast) that are not annotated:
    crowders, membranes, gold, ice contamination. Background patches are centred on them
    half of the time, so the network learns what is *not* a target (the errors left after a
    CPU-budget training were unlabelled crowders picked as a species).
    This assumes complete annotation, which supervised training does.
    """

    def __init__(self, volume, table, class_names, diameters, mask_type="tball", name="", n_negatives=300,
                 sparse=False, norm=None):
        self.name = name
        self.volume = network_input(volume, norm)
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

    Slow intensity fields (uneven ice, carbon) are removed from the input by the local
    normalisation (:func:`picker3d.engine.volume.local_normalize`) rather than learnt: a
    random ramp of up to ±0.5 std across each patch, added here, stopped a short sparse-label
    training from learning anything (validation F1 0 against 1.0 without it).
    """
    angle = rng.uniform(-max_angle, max_angle)
    v = ndimage.rotate(v, angle, axes=(1, 2), reshape=False, order=1, mode="reflect")
    lab_axes = (lab.ndim - 2, lab.ndim - 1)     # labels may carry a leading class axis (heatmaps)
    lab = ndimage.rotate(lab, angle, axes=lab_axes, reshape=False, order=0, mode="constant", cval=0)
    v = v * rng.uniform(0.8, 1.25) + rng.uniform(-0.2, 0.2)
    v = v + rng.normal(0.0, rng.uniform(0.0, 0.3), size=v.shape)
    return v.astype(np.float32), lab


def binning_phase_copies(volumes, tables, factor, class_names, mask_diam, mask_type, holdout, reach, norm=None):
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
            d = TomogramData(vo, to, class_names, mask_diam, mask_type, name=f"train{i}+{o}", norm=norm)
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


@dataclass
class TrainingData:
    """What the step loop and validation read: the training volumes (the shifted binning
    grids among them), the calibration volumes and tables (normalised, network voxels), the
    per-class priors of the PU loss and the class weights of the cross-entropy."""
    volumes: list
    val_volumes: list
    val_tables: list
    validated: bool          # False: no calibration data (sparse labels without validation tomograms)
    held_out: bool
    priors: object
    class_weight: object
    densities: object = None    # expected particles per network voxel of each class (sparse labels)


def prepare_data(cfg, train_vols, train_tables, val_vols, val_tables, checkpoint=None, ckpt_path="", log=print):
    """Bin, normalise and label the tomograms for ``cfg`` (:class:`TrainConfig`); choose the
    calibration data (validation tomograms, a held-out part, or the training tomograms)."""
    b, names = cfg.bin, cfg.class_names

    def binned_table(t):
        return CoordTable(to_binned(t.xyz, b), t.classes, t.scores)

    tables = [binned_table(t) for t in train_tables]
    # normalised once here, as the training volumes are (TomogramData): validation then predicts
    # with stats=NORMALISED instead of estimating every volume's statistics again each epoch
    vvols = [network_input(bin_volume(v, b), cfg.input_norm) for v in val_vols]
    vtables = [binned_table(t) for t in val_tables]
    binned = [bin_volume(v, b) for v in train_vols]
    data = [TomogramData(v, t, names, cfg.label_diameters, cfg.mask_type, name=f"train{i}", sparse=cfg.sparse,
                         norm=cfg.input_norm) for i, (v, t) in enumerate(zip(binned, tables))]
    # the contrast the model learns (picking checks a tomogram against it): the band-passed
    # skewness of the training tomograms at the median class diameter
    cfg.polarity_skew = round(float(np.mean([polarity_skew(d.volume, np.median(list(cfg.network_diameters.values())))
                                             for d in data])), 4)
    # how far before a hold-out cut a particle may be centred and still reach across it
    reach = max(max(cfg.network_diameters.values()) / 2, 8.0)
    held_out = False
    if not vvols and not cfg.sparse:
        vvols, vtables, held_out = _calibration_data(cfg, data, reach, log)
    cfg.resolve_bin_phases(checkpoint, ckpt_path, log)
    if cfg.bin_phases:
        phases = binning_phase_copies(train_vols, train_tables, b, names, cfg.label_diameters, cfg.mask_type,
                                      cfg.holdout if held_out else 0.0, reach, cfg.input_norm)
        data += phases
        log(f"binning phases: {len(data)} training volumes ({b}x-binned from {len(train_vols)} tomogram(s) at "
            f"{len(phases) // len(train_vols) + 1} grid offsets)")
    annotated = {c for t in tables if t.classes is not None for c in t.classes.tolist()}
    missing = [c for c in names if c not in annotated]
    if missing and len(names) > 1:
        raise InputError(f"--diameters: class(es) {', '.join(missing)} have no annotation in the training coordinates")
    priors = _priors(cfg, data, tables, binned, log)
    densities = None
    if priors is not None:
        densities = [p / positive_voxels_per_particle(cfg.label_diameters[c]) for p, c in zip(priors, names)]
    cfg.val_labels = _validation_labels(cfg, vvols, vtables, densities, log)
    if cfg.val_labels == "none":
        # no validation tomograms: the training tomograms' annotations set the count thresholds
        vvols, vtables = [d.volume for d in data[:len(tables)]], [d.table for d in data[:len(tables)]]
    return TrainingData(data, vvols, vtables, bool(vvols), held_out, priors, _class_weight(cfg, data), densities)


def _validation_labels(cfg, vvols, vtables, densities, log):
    """complete (F1 calibration), sparse (thresholds by the expected count, epoch by the recall
    of the annotated particles) or none (sparse labels without validation tomograms: count
    thresholds on the training tomograms, the last epoch kept)."""
    if not cfg.sparse or densities is None:
        return "complete"
    if not vvols:
        log("no validation tomograms: the last epoch is kept; each class keeps as many picks as its prior "
            "expects (thresholds set on the training tomograms)")
        return "none"
    kind = cfg.val_labels
    if kind == "auto":
        expected = sum(densities) * sum(float(np.prod(np.shape(v))) for v in vvols)
        annotated = sum(len(t) for t in vtables)
        kind = "complete" if annotated >= 0.5 * expected else "sparse"
        log(f"validation coordinates: {annotated} particles where the prior expects about {expected:.0f}: taken "
            f"as {kind} annotation (--val-labels says otherwise)")
    unknown = sorted({c for t in vtables if t.classes is not None for c in t.classes.tolist()} - set(cfg.class_names))
    if kind == "sparse" and unknown:
        # sparse validation particles are all there is to choose the epoch by: each must count
        raise InputError(f"--val-coords: class(es) {', '.join(unknown)} of the validation coordinates are not "
                         f"trained (--diameters: {', '.join(cfg.class_names)})")
    return kind


def _calibration_data(cfg, data, reach, log):
    """No validation tomograms, complete labels: a held-out part of each training tomogram
    (``cfg.holdout``), else the training tomograms themselves."""
    if cfg.holdout:
        parts = [hold_out(d, float(cfg.holdout), reach) for d in data]
        if all(p is not None for p in parts):
            vvols, vtables = [p[0] for p in parts], [p[1] for p in parts]
            log(f"no validation tomograms: {cfg.holdout:g} of each training tomogram held out to choose the "
                f"epoch and calibrate the thresholds ({sum(len(t) for t in vtables)} particles)")
            left = {c for d in data for c in d.cls.tolist()}
            gone = [c for i, c in enumerate(cfg.class_names, start=1) if i not in left]
            if gone:
                log(f"warning: holdout: every annotated {', '.join(gone)} particle lies in the held-out "
                    f"part; the network will not learn {'it' if len(gone) == 1 else 'them'}")
            return vvols, vtables, True
        log("no validation tomograms and the training tomograms are too small to hold a part out: "
            "the training tomograms calibrate the thresholds")
    else:
        log("no validation tomograms: the training tomograms choose the epoch and calibrate the thresholds")
    return [d.volume for d in data], [d.table for d in data], False


def _priors(cfg, data, tables, binned, log):
    """Per-class priors of the PU loss (sparse labels), from --prior or --expected-particles."""
    if not (cfg.sparse and cfg.loss == "pu"):
        return None
    if cfg.prior is None:
        cfg.prior = prior_from_counts(cfg.expected_particles, tables, cfg.class_names, cfg.label_diameters,
                                      binned[0].shape)
        log(f"class prior {cfg.prior:.3e} from {cfg.expected_particles:g} particles per tomogram")
    for d in data:
        msg = check_prior(cfg.prior, d.labels.max(axis=0))
        if msg:
            log(f"warning: {d.name}: {msg}")
    return class_priors(cfg.prior, tables, cfg.class_names, cfg.label_diameters)


def _class_weight(cfg, data):
    """Cross-entropy class weights: background voxels dominate, so inverse frequency (square
    root, capped at 20x the background's)."""
    if cfg.sparse:
        return None
    counts = np.bincount(np.concatenate([d.labels.ravel()[::7] for d in data]), minlength=cfg.n_classes + 1)
    w = (counts.sum() / np.maximum(counts, 1)) ** 0.5
    return torch.tensor(np.minimum(w / w[0], 20.0), dtype=torch.float32, device=cfg.device)
