"""Picking a whole tomogram with a model file's settings: binning, slab-wise inference and
post-processing for thick tomograms, the model's calibrated thresholds."""
import math

import numpy as np

from ..formats.table import CoordTable
from ..volume import bin_volume, from_binned, to_binned, volume_stats
from .peaks import _inside_border, deduplicate, find_particles
from .tiles import predict_volume


SLAB = 64    # z planes (binned) post-processed at a time in large tomograms


def pick_tomogram(model, meta, volume, device="cpu", threshold=None, tile=None, pad=None, mode="peaks",
                  log=None, progress=False, flips=None, border=0, slab=SLAB, prebinned=False, precision="auto"):
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
    """
    factor = int(meta.get("bin", 1))
    tile = tile or meta.get("tile", 96)
    pad = meta.get("pad", 12) if pad is None else pad
    flips = flips or meta.get("flips", 1)
    binned = np.asarray(volume, dtype=np.float32) if prebinned else bin_volume(volume, factor)
    Z = binned.shape[0]
    halo = _postprocess_margin(meta)
    if mode == "cc" or not slab or Z <= slab + 2 * halo:
        probs = predict_volume(model, binned, tile=tile, pad=pad, device=device, log=log,
                               progress=progress, flips=flips, precision=precision)
        return particles_from_probs(probs, meta, threshold=threshold, mode=mode, border=border), probs
    stats = volume_stats(binned)
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
