"""Picking a whole tomogram with a model file's settings: binning, slab-wise inference and
post-processing for thick tomograms, the model's calibrated thresholds."""
import math

import numpy as np

from ..errors import InputError
from ..formats.table import CoordTable
from ..volume import NORMALISED, bin_volume, from_binned, network_input, to_binned
from .peaks import _inside_border, deduplicate, find_particles
from .specimen import band_pass, polarity_mismatch, polarity_skew, specimen_slab
from .tiles import predict_volume

SLAB = 64    # z planes (binned) post-processed at a time in large tomograms


def pick_tomogram(model, meta, volume, device="cpu", threshold=None, tile=None, pad=None, mode="peaks",
                  log=None, progress=False, flips=None, border=0, slab=SLAB, prebinned=False, precision="auto",
                  specimen="auto", mask=None, check_polarity=True):
    """Pick one tomogram with a loaded model; returns ``(CoordTable, probs)``.

    The tomogram is binned by the model's factor (``meta["bin"]``) before inference;
    coordinates are returned in the original voxel frame, ``probs`` stay binned (use
    :func:`upsample` for a full-size score map). Thresholds default to the calibrated ones
    stored in the model; ``threshold`` overrides every class's score threshold.

    Memory: when the binned tomogram is thicker than ``slab`` planes plus the margins the
    post-processing needs, it is predicted and post-processed slab by slab along z (each
    slab with the margins, computed by the same tiles as whole-volume inference, so the
    picks are the same) and only the background probability is kept for the whole volume
    (``probs`` then has that one channel). ``mode="cc"`` always works on the whole volume.
    With ``prebinned``, ``volume`` is already binned by the model's factor (e.g. by
    :func:`picker3d.engine.formats.mrc.read_binned`, which never holds the full-size tomogram).

    The network reads the tomogram normalised as its model file says (``input_norm``:
    :func:`picker3d.engine.volume.network_input`). ``check_polarity``: a tomogram whose
    contrast is the opposite of the model's training tomograms (``polarity_skew``) is refused
    with an InputError naming ``--invert``. Picks are kept inside the specimen
    (:func:`restrict_to_specimen`: ``specimen`` "auto", None, or (z0, z1) in voxels; ``mask``
    a volume of the tomogram's shape, non-zero where picks are kept).
    """
    factor = int(meta.get("bin", 1))
    tile = tile or meta.get("tile", 96)
    pad = meta.get("pad", 12) if pad is None else pad
    flips = flips or meta.get("flips", 1)
    binned = np.asarray(volume, dtype=np.float32) if prebinned else bin_volume(volume, factor)
    net_in = network_input(binned, meta.get("input_norm"))
    del binned
    # the polarity check and the slab read one band-passed copy of the input
    check_polarity = check_polarity and meta.get("polarity_skew") is not None
    band = band_pass(net_in, _polarity_diameter(meta)) if check_polarity or specimen == "auto" else None
    if check_polarity:
        check_contrast(net_in, meta, band)
    table, probs = _pick_normalised(model, meta, net_in, device, threshold, tile, pad, mode, log, progress, flips,
                                    border, slab, precision)
    return restrict_to_specimen(table, net_in, meta, specimen, mask, log, band), probs


def check_contrast(net_in, meta, band=None):
    """InputError when the tomogram's contrast is the opposite of the model's training
    tomograms (band-passed skewness of opposite sign, :mod:`.specimen`). ``band``: the
    input band-passed at :func:`_polarity_diameter`, when already computed."""
    model_skew = meta.get("polarity_skew")
    if model_skew is None:
        return
    here = polarity_skew(net_in, _polarity_diameter(meta), band=band)
    if polarity_mismatch(here, model_skew):
        raise InputError(f"the contrast is inverted relative to the model's training tomograms (dense material "
                         f"{'bright' if here > 0 else 'dark'} here, {'bright' if model_skew > 0 else 'dark'} "
                         f"there: band-passed skewness {here:+.2f} vs {model_skew:+.2f}): pick with --invert "
                         f"(or --no-polarity-check to pick it as it is)")


def _polarity_diameter(meta):
    """The scale (network voxels) at which polarity and the specimen slab are read: the median
    class diameter."""
    return float(np.median(list(_binned_diameters(meta).values())))


def restrict_to_specimen(table, net_in, meta, specimen="auto", mask=None, log=None, band=None):
    """Picks inside the specimen only: ``specimen`` "auto" (the slab found in the binned
    network input, :func:`picker3d.engine.picking.specimen.specimen_slab`; ``band``: the input
    band-passed at :func:`_polarity_diameter`, when already computed), None (every plane) or
    ``(z0, z1)`` (original voxels, z1 exclusive); and where ``mask`` (:func:`keep_in_mask`)
    is non-zero."""
    factor = int(meta.get("bin", 1))
    if specimen == "auto":
        largest = max(_binned_diameters(meta).values())
        zb0, zb1 = specimen_slab(net_in, _polarity_diameter(meta), margin=largest / 2.0, band=band)
        specimen = None if (zb0, zb1) == (0, net_in.shape[0]) else (zb0 * factor, zb1 * factor)
        if specimen and log:
            log(f"specimen slab z {specimen[0]}-{specimen[1]} of {net_in.shape[0] * factor} planes: "
                f"{int(np.sum(~_in_planes(table, *specimen)))} picks outside dropped (--z-range all keeps them)")
    if specimen is not None:
        table = table.subset(np.flatnonzero(_in_planes(table, *specimen)))
    return keep_in_mask(table, mask)


def _in_planes(table, z0, z1):
    """Which picks lie in the planes z0 (inclusive) to z1 (exclusive), voxel centres at integers."""
    return (table.xyz[:, 2] >= z0 - 0.5) & (table.xyz[:, 2] < z1 - 0.5)


def keep_in_mask(table, mask):
    """The picks whose nearest voxel of ``mask`` (the tomogram's shape; None: no mask) is non-zero."""
    if mask is None or not len(table):
        return table
    idx = np.clip(np.rint(table.xyz[:, ::-1]).astype(int), 0, np.array(mask.shape) - 1)
    return table.subset(np.flatnonzero(mask[idx[:, 0], idx[:, 1], idx[:, 2]] != 0))


def _pick_normalised(model, meta, binned, device, threshold, tile, pad, mode, log, progress, flips, border, slab,
                     precision):
    """Inference and post-processing of the normalised, binned tomogram (whole, or slab by
    slab for thick ones); returns ``(table, probs)``."""
    factor = int(meta.get("bin", 1))
    Z = binned.shape[0]
    halo = _postprocess_margin(meta)
    if mode == "cc" or not slab or Z <= slab + 2 * halo:
        probs = predict_volume(model, binned, tile=tile, pad=pad, device=device, log=log,
                               progress=progress, flips=flips, precision=precision, stats=NORMALISED)
        return particles_from_probs(probs, meta, threshold=threshold, mode=mode, border=border), probs
    stats = NORMALISED
    background = np.empty((1,) + binned.shape, dtype=np.float32)
    tables = []
    rows = {}       # rows of tiles shared by consecutive slabs
    for z0 in range(0, Z, slab):
        z1 = min(z0 + slab, Z)
        lo, hi = max(z0 - halo, 0), min(z1 + halo, Z)
        if log:
            log(f"slab z {z0}-{z1} of {Z} (binned)")
        probs = predict_volume(model, binned, tile=tile, pad=pad, device=device, flips=flips, z_range=(lo, hi),
                               stats=stats, progress=progress, log=None, cache=rows,
                               precision=precision)
        background[0, z0:z1] = probs[0, z0 - lo:z1 - lo]
        t = particles_from_probs(probs, meta, threshold=threshold, mode=mode, border=0, z_offset=lo,
                                 dedupe=False)
        zb = to_binned(t.xyz, factor)[:, 2] if len(t) else np.zeros(0)
        tables.append(t.subset(np.where((zb >= z0 - 0.5) & (zb < z1 - 0.5))[0]))   # this slab's own picks
    table = CoordTable(np.concatenate([t.xyz for t in tables]), np.concatenate([t.classes for t in tables]),
                       np.concatenate([t.scores for t in tables]))
    # border and de-duplication once, in the binned frame as whole-volume picking does them
    xyz_b = to_binned(table.xyz, factor)
    if border > 0 and len(table):
        ok = _inside_border(xyz_b, binned.shape, border / factor)
        table, xyz_b = table.subset(np.where(ok)[0]), xyz_b[ok]
    keep = deduplicate(xyz_b, table.scores, table.classes, _binned_diameters(meta))
    return table.subset(keep), background


def _postprocess_margin(meta):
    """Planes of context the peak finding needs around a slab (binned voxels): the Gaussian's
    reach, half the max-pooling window, the 3x3x3 vote and refinement (de-duplication is done
    once for the whole volume)."""
    d = max(list(_binned_diameters(meta).values()) + list((meta.get("label_diameters") or {}).values()))
    sigma = max(d * peak_smoothing(meta), 0.5)
    return int(math.ceil(3.0 * sigma + 0.5)) + (max(3, int(math.ceil(d / 2)) | 1)) // 2 + 2


def _binned_diameters(meta):
    """{class: diameter} in the voxels of the model's (binned) network."""
    factor = int(meta.get("bin", 1))
    return {c: meta["diameters"][c] / factor for c in meta["classes"]}


def peak_smoothing(meta):
    """Gaussian sigma (fraction of the diameter) before peak finding for this model.

    A centre heatmap (sparse labels) is already peaked: d/12. A segmentation plateau needs a
    wider Gaussian to have one maximum, but d/4 merged neighbouring particles into one peak
    (d/6 measured better: docs/picking.md, *Method*). Model files record the value they were
    calibrated with; files without it were calibrated at d/4.
    """
    if "peak_smoothing" in meta:
        return float(meta["peak_smoothing"])
    sparse = meta.get("labels") == "sparse"
    return default_peak_smoothing(sparse) if sparse else 0.25      # complete labels: d/4 before the key


def default_peak_smoothing(sparse):
    """Peak smoothing written into new model files (see :func:`peak_smoothing`)."""
    return 1.0 / 12.0 if sparse else 1.0 / 6.0


def particles_from_probs(probs, meta, threshold=None, mode="peaks", thresholds=None, border=0, z_offset=0,
                         dedupe=True):
    """Post-processing with a model's settings: binned probabilities → table in original voxels.

    ``border`` (original voxels) drops particles whose centre is closer than that to a face
    of the volume, for every class alike. ``probs`` may be the planes from ``z_offset`` on
    of a larger volume (slab-wise picking, which de-duplicates once at the end).
    """
    factor = int(meta.get("bin", 1))
    thr = thresholds if thresholds is not None else (meta.get("thresholds") or {})
    t_seg = thr.get("t_seg", 0.5)
    class_thr = None if threshold is not None else thr.get("class")
    t_lm = 0.1 if threshold is None else threshold
    table = find_particles(probs, meta["classes"], _binned_diameters(meta), t_seg=t_seg, t_lm=t_lm, mode=mode,
                           class_thresholds=class_thr, min_size=max(1, int(meta.get("min_size", 1))),
                           border=border / factor, smooth=peak_smoothing(meta), dedupe=dedupe,
                           label_diameters=meta.get("label_diameters"))
    if z_offset and len(table):
        table.xyz = table.xyz + [0.0, 0.0, float(z_offset)]
    table.xyz = from_binned(table.xyz, factor)
    return table
