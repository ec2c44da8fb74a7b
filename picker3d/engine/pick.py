"""Overlap-tile inference and peak post-processing (DeepETPicker seed 000; DeepFinder seed 001).

Inference: tiles of side ``tile`` (a multiple of 8; seed 000 §A.3 default N = 72) overlap
by ``pad`` voxels on each side (seed 000 default pad_size = 12); only the central
``tile - 2*pad`` of every tile is kept, so borders of tiles never reach the output. At the
volume's own faces the tiles are flush with the face (no mirrored padding): the network
sees a face as it saw one in its training patches.

Post-processing (vectorised; seed 000 §A.3 and §A.9):
- score map = 1 - P(background); peaks must sit where it is >= ``t_seg``;
- for each class, the score map is smoothed with a Gaussian of sigma d/4 (a weak-label
  plateau of that class's size then has one maximum, at its centre) and local maxima are
  taken by 3D max-pooling (window ceil(d/2)) above ``t_lm`` (seed 000: 0.1); a peak is kept
  for the class that the class probabilities around it (3x3x3) vote for;
- sub-voxel centre = score-weighted centroid of the 3x3x3 neighbourhood;
- de-duplication: a peak within t_dist = ceil(d/2) of a higher-scoring one is dropped;
- per-particle score = the smoothed foreground probability at the peak (for PR curves).
A DeepFinder-style alternative (``mode="cc"``) takes connected components of the argmax
map with a minimum size and their centroids.
"""
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import cKDTree

from .coords import CoordTable
from .errors import InputError
from .network import autocast, autocast_dtype
from .volume import bin_volume, from_binned, normalize, to_binned, volume_stats


def _axis_tiles(n, tile, pad, multiple=8):
    """Tiles along one axis of length ``n``: ``(side, starts, bounds)``.

    Tiles lie inside the volume, the first flush with its start, the last with its end, so a
    tile never reads beyond the volume's faces: the network sees a face exactly as it saw one
    in training (patches are cut inside the tomogram; the convolutions' own zero padding
    beyond). Mirror-padding the faces instead showed it mirrored structure it never saw:
    on the benchmark a third of the false picks of a species >= 12 voxels sat within 4 voxels
    of a face. As few tiles as a side of at most ``tile`` allows, each only as long as its
    share of the axis plus the overlap needs; neighbouring tiles overlap by at least
    ``2 * pad`` and each keeps its planes up to the middle of the overlap, so the planes kept
    lie at least ``pad`` from any face of a tile that is not a face of the volume. A single
    tile longer than the axis (the axis is not a multiple of ``multiple``) is completed with
    zeros (the normalised mean). ``bounds`` has one more entry than ``starts``: tile ``i``
    keeps ``[bounds[i], bounds[i + 1])``.
    """
    single = -(-n // multiple) * multiple
    if single <= tile:
        return single, [0], [0, n]
    inner = tile - 2 * pad
    k = 1 + -(-(n - tile) // inner)
    while True:
        side = min(tile, -(-(-(-(n - 2 * pad) // k) + 2 * pad) // multiple) * multiple)
        starts = [(i * (n - side)) // (k - 1) for i in range(k)]
        if all(b - a <= side - 2 * pad for a, b in zip(starts, starts[1:])):
            break
        k += 1
    bounds = [0] + [(b + a + side) // 2 for a, b in zip(starts, starts[1:])] + [n]
    return side, starts, bounds


def tile_sides(shape, tile, pad, multiple=8):
    """Tile length per axis: as few tiles as a side of at most ``tile`` allows, each only as long
    as its share of the axis plus the overlap needs (:func:`_axis_tiles`).

    A cubic tile wastes most of its work on thin or small volumes (a 48x128x128 binned
    tomogram computed 4.5 voxels per output voxel with 96^3 tiles; with these sides and
    ``tile`` 128 it is one tile).
    """
    return [_axis_tiles(n, tile, pad, multiple)[0] for n in shape]


def _tile_grid(shape, tile, pad, multiple=8):
    """Per axis: tile side, tile starts and the bounds of the planes each tile keeps."""
    axes = [_axis_tiles(n, tile, pad, multiple) for n in shape]
    return [a[0] for a in axes], [a[1] for a in axes], [a[2] for a in axes]


def tile_overhead(shape, tile, pad, multiple=8):
    """Computed voxels per output voxel of the overlap-tile scheme for a volume of this shape."""
    sides, starts, _ = _tile_grid(shape, tile, pad, multiple)
    return float(np.prod([len(s) * t for s, t in zip(starts, sides)])) / float(np.prod(shape))


def upsample(volume, factor, shape):
    """Trilinear upsampling of a binned map back to ``shape`` (edge-padded where cropped)."""
    if factor == 1 and volume.shape == tuple(shape):
        return volume
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    up = F.interpolate(t, scale_factor=factor, mode="trilinear", align_corners=False)[0, 0].numpy()
    pad = [(0, max(n - u, 0)) for n, u in zip(shape, up.shape)]
    return np.pad(up, pad, mode="edge")[:shape[0], :shape[1], :shape[2]]


def _is_oom(exc):
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def predict_volume(model, volume, tile=96, pad=12, device="cpu", progress=False, log=None, flips=1,
                   z_range=None, stats=None, cache=None, precision="auto"):
    """Class probabilities ``(K, Z, Y, X)`` (float32, background first) by overlap-tile inference.

    ``flips`` > 1 averages the predictions of mirrored copies (test-time augmentation:
    2 = also mirrored in x, 4 = x, y and xy). When a tile does not fit in memory (CUDA
    out-of-memory or MemoryError) the tile side is reduced and inference restarts.
    ``z_range=(z0, z1)`` returns only those planes, computed by the very tiles whole-volume
    inference uses for them (identical values; memory of the range, not of the volume);
    ``stats=(mean, std)`` is the volume's normalisation when it was computed beforehand.
    ``cache`` (a dict kept by the caller across consecutive ``z_range`` calls that move one
    way along z) holds the rows of tiles the next range still needs, so no tile is computed
    twice; rows the current range did not use are dropped. ``precision``: the arithmetic of
    the forward passes (:func:`picker3d.engine.network.autocast_dtype`; ``auto`` = bfloat16 on
    CPUs that have it, float16 on CUDA).
    """
    m = model.multiple
    # a tile larger than the volume only costs memory: shrink it to fit
    fit = max(-(-max(volume.shape) // m) * m, -(-(2 * pad + 1) // m) * m)
    if tile > fit:
        if log:
            log(f"tile {tile} is larger than the volume {tuple(volume.shape)}: using {fit}")
        tile = fit
    while True:
        try:
            return _predict_tiles(model, volume, tile, pad, device, progress, log, flips, z_range, stats, cache,
                                  precision)
        except (RuntimeError, MemoryError) as exc:
            smaller = (tile - 24) // m * m
            if not _is_oom(exc):
                raise
            if smaller <= 2 * pad:
                raise InputError(f"--tile: out of memory on {device} even with tile {tile} (padding {pad}); "
                                 f"free memory, use --device cpu or a smaller --pad") from exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if log:
                log(f"tile {tile} does not fit in memory, retrying with tile {smaller}")
            tile = smaller


FLIP_SETS = {1: [()], 2: [(), (2,)], 4: [(), (2,), (1,), (1, 2)], 8: [(), (2,), (1,), (1, 2), (0,), (0, 2), (0, 1), (0, 1, 2)]}


def _predict_tiles(model, volume, tile, pad, device, progress, log, flips, z_range=None, stats=None, cache=None,
                   precision="auto"):
    m = model.multiple
    if tile % m:
        raise ValueError(f"tile {tile} must be a multiple of {m}")
    if tile - 2 * pad <= 0:
        raise ValueError(f"tile {tile} must exceed twice the padding {pad}")
    if flips not in FLIP_SETS:
        raise ValueError(f"flips must be one of {sorted(FLIP_SETS)}, not {flips}")
    mean, std = stats if stats is not None else volume_stats(volume)
    Z, Y, X = volume.shape
    z0, z1 = z_range if z_range is not None else (0, Z)
    # tiles flush with the volume's faces, overlapping each other (_axis_tiles); they are cut
    # from the volume by index arithmetic, so no padded or mirrored copy of it is made
    sides, starts, bounds = _tile_grid(volume.shape, tile, pad, m)
    K = model.n_classes + 1
    out = np.zeros((K, z1 - z0, Y, X), dtype=np.float32)
    model.eval()
    dev = torch.device(device)
    amp = autocast_dtype(dev, precision)
    t0 = time.time()
    flip_axes = FLIP_SETS[flips]
    plan = []
    for axes in flip_axes:
        # the planes [z0, z1) lie at [Z - z1, Z - z0) of a volume mirrored in z
        f0, f1 = (Z - z1, Z - z0) if 0 in axes else (z0, z1)
        rows = [i for i in range(len(starts[0])) if bounds[0][i] < f1 and bounds[0][i + 1] > f0]
        plan.append((axes, f0, f1, rows))
    per_row = len(starts[1]) * len(starts[2])
    n_all = per_row * sum(1 for axes, _, _, rows in plan for i in rows
                          if cache is None or (axes, starts[0][i], tuple(sides)) not in cache)
    n_done = 0
    used = set()

    def predict_row(i, idx, dst, p0, p1):
        """Tiles of the z row ``i``: their kept planes in [p0, p1) go to dst[:, plane - p0]."""
        nonlocal n_done
        a = starts[0][i]
        with torch.inference_mode():
            # one tile per forward pass: on a CPU larger batches are not faster (measured)
            for j, b in enumerate(starts[1]):
                for k, c in enumerate(starts[2]):
                    sub = normalize(volume[np.ix_(idx[0][a:a + sides[0]], idx[1][b:b + sides[1]],
                                                  idx[2][c:c + sides[2]])], (mean, std))
                    if sub.shape != tuple(sides):   # one tile longer than its axis: zeros after the end
                        sub = np.pad(sub, [(0, t - n) for t, n in zip(sides, sub.shape)])
                    xt = torch.from_numpy(np.ascontiguousarray(sub, dtype=np.float32))[None, None]
                    with autocast(dev, amp):
                        logits = model(xt.to(dev), offset=(a, b, c), full_shape=(Z, Y, X))
                    p = model.probabilities(logits.float())[0]
                    za, zb = max(bounds[0][i], p0), min(bounds[0][i + 1], p1)
                    ya, yb = bounds[1][j], bounds[1][j + 1]
                    xa, xb = bounds[2][k], bounds[2][k + 1]
                    if zb > za:
                        dst[:, za - p0:zb - p0, ya:yb, xa:xb] = p[:, za - a:zb - a, ya - b:yb - b, xa - c:xb - c].cpu().numpy()
                    n_done += 1
                    if progress or log:
                        el = time.time() - t0
                        msg = f"tiles {n_done}/{n_all}  elapsed {el:.0f}s  ETA {el / n_done * (n_all - n_done):.0f}s"
                        if progress and sys.stderr.isatty():
                            print("\r" + msg, end="", file=sys.stderr, flush=True)
                        elif log and (n_done == n_all or n_done % max(1, n_all // 10) == 0):
                            log(msg)

    for axes, f0, f1, rows in plan:
        # a mirrored copy (test-time flip) is read backwards
        idx = [np.arange(n)[::-1] if ax in axes else np.arange(n) for ax, n in enumerate(volume.shape)]
        acc = np.zeros((K, f1 - f0, Y, X), dtype=np.float32)
        for i in rows:
            if cache is None:
                predict_row(i, idx, acc, f0, f1)
                continue
            # slab-wise picking: a row of tiles reaching into the next slab is kept, not recomputed
            key = (axes, starts[0][i], tuple(sides))
            lo, hi = bounds[0][i], bounds[0][i + 1]
            if key not in cache:
                block = np.zeros((K, hi - lo, Y, X), dtype=np.float32)
                predict_row(i, idx, block, lo, hi)
                cache[key] = block          # only once complete (out of memory may stop a row)
            used.add(key)
            za, zb = max(lo, f0), min(hi, f1)
            acc[:, za - f0:zb - f0] = cache[key][:, za - lo:zb - lo]
        out += np.flip(acc, tuple(a + 1 for a in axes)) if axes else acc
    if cache is not None:
        for key in [k for k in cache if k not in used]:     # slabs move one way: never needed again
            del cache[key]
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    if len(flip_axes) > 1:
        out /= len(flip_axes)
    return out


def find_particles(probs, class_names, diameters, t_seg=0.5, t_lm=0.1, min_size=1, mode="peaks",
                   border=0, class_thresholds=None, smooth=0.25, dedupe=True, label_diameters=None):
    """Particles from class probabilities ``(K, Z, Y, X)``; returns a CoordTable with scores.

    ``diameters`` maps class name → diameter in voxels (for NMS windows and t_dist).
    ``class_thresholds`` (optional) maps class name → minimum score, e.g. calibrated on
    validation data; it overrides ``t_lm`` for that class. ``smooth`` is the Gaussian sigma
    applied before peak finding, as a fraction of the diameter (1/4 for segmentation
    plateaus; a centre heatmap is already peaked and uses 1/12). ``label_diameters`` (the
    weak labels' diameters, when they differ from the particles') sets the peak-finding
    scale to the larger of the two, so a label wider than its particle gives one peak.
    """
    K = probs.shape[0]
    fg = 1.0 - probs[0]
    shape = fg.shape
    if mode == "cc":
        lab_cls = np.argmax(probs, axis=0)
        lab_cls[fg < t_seg] = 0
        comps, n = ndimage.label(lab_cls > 0)
        if n == 0:
            return CoordTable(np.zeros((0, 3)), [], [])
        idx = np.arange(1, n + 1)
        sizes = ndimage.sum_labels(np.ones_like(fg), comps, idx)
        cent = np.array(ndimage.center_of_mass(fg, comps, idx)).reshape(-1, 3)
        score = ndimage.mean(fg, comps, idx)
        keep = sizes >= min_size
        # majority class per component, one labelled sum per class (no per-component loop)
        votes = np.stack([ndimage.sum_labels(lab_cls == k, comps, idx) for k in range(1, K)], axis=1)
        cls_idx = votes[keep].argmax(axis=1).astype(int) + 1
        xyz = cent[keep][:, ::-1]
        scores = np.asarray(score)[keep]
    else:
        scales = {c: max(float(diameters[c]), float((label_diameters or {}).get(c, 0.0))) for c in class_names}
        xyz, scores, cls_idx = _peaks_per_class_scale(probs, fg, class_names, scales, t_seg, t_lm, smooth)
    names = np.array(class_names, dtype=object)[cls_idx - 1] if len(cls_idx) else np.array([], dtype=object)
    # per-class calibrated thresholds
    if class_thresholds:
        thr = np.array([class_thresholds.get(n, t_lm) for n in names])
        ok = scores >= thr
        xyz, scores, names = xyz[ok], scores[ok], names[ok]
    # border margin
    if border > 0 and len(xyz):
        ok = _inside_border(xyz, shape, border)
        xyz, scores, names = xyz[ok], scores[ok], names[ok]
    keep = deduplicate(xyz, scores, names, diameters) if dedupe else np.arange(len(xyz))
    return CoordTable(xyz[keep], names[keep], scores[keep])


def _inside_border(xyz, shape_zyx, border):
    """Rows of ``xyz`` whose centre is at least ``border`` voxels from every face."""
    lim = np.array(shape_zyx[::-1]) - 1 - border
    return np.all((xyz >= border) & (xyz <= lim), axis=1)


_NEIGHBOURS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)


def _refine(score, zyx):
    """Sub-voxel centres: score-weighted centroid of each peak's 3x3x3 neighbourhood."""
    shape = np.array(score.shape)
    nb = np.clip(zyx[:, None, :] + _NEIGHBOURS[None], 0, shape - 1)          # (n, 27, 3)
    w = score[nb[..., 0], nb[..., 1], nb[..., 2]]
    w = np.maximum(w - w.min(axis=1, keepdims=True), 0) + 1e-12           # background-free weights
    return (nb * w[..., None]).sum(axis=1) / w.sum(axis=1)[:, None]


def _peaks_per_class_scale(probs, fg, class_names, diameters, t_seg, t_lm, smooth=0.25):
    """Peaks of the foreground score found at each class's own scale.

    Weak labels make the network's foreground a plateau over each particle, as wide as the
    particle. For each class k the foreground is smoothed with a Gaussian of sigma d_k/4 (a
    plateau of that size then has one maximum, at its centre) and local maxima are taken by
    max-pooling over ceil(d_k/2); a peak is kept for class k only if the class
    probabilities around it (3x3x3 sum) say k, so small and large species are each found
    at their own scale (one window for all classes splits large plateaus into several
    peaks). Score = the smoothed foreground at the peak.
    """
    summed = ndimage.uniform_filter(probs[1:], size=(1, 3, 3, 3), mode="nearest")
    all_xyz, all_scores, all_cls = [], [], []
    for k, c in enumerate(class_names, start=1):
        d = float(diameters[c])
        g = ndimage.gaussian_filter(fg, max(d * smooth, 0.5), mode="nearest", truncate=3.0)
        win = max(3, int(math.ceil(d / 2)) | 1)
        # separable running maximum (identical to max-pooling a cube, whose cost grows with
        # win³: 26 of 28 s of post-processing a 96x256x256 volume were max_pool3d)
        pooled = ndimage.maximum_filter(g, size=win, mode="nearest")
        zyx = np.argwhere((g >= pooled) & (g > t_lm))
        if len(zyx) == 0:
            continue
        ok = (summed[:, zyx[:, 0], zyx[:, 1], zyx[:, 2]].argmax(axis=0) + 1 == k) & \
             (fg[zyx[:, 0], zyx[:, 1], zyx[:, 2]] >= t_seg)
        zyx = zyx[ok]
        if len(zyx) == 0:
            continue
        refined = _refine(g, zyx)
        all_xyz.append(refined[:, ::-1])
        all_scores.append(g[zyx[:, 0], zyx[:, 1], zyx[:, 2]])
        all_cls.append(np.full(len(zyx), k))
    if not all_xyz:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=int)
    return np.concatenate(all_xyz), np.concatenate(all_scores), np.concatenate(all_cls)


def deduplicate(xyz, scores, names, diameters):
    """Greedy NMS: drop a particle within ceil(d/2) of a higher-scoring one (any class)."""
    if len(xyz) == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(-scores, kind="stable")
    tdist = np.array([math.ceil(diameters[n] / 2) for n in names], dtype=float)
    tree = cKDTree(xyz)
    removed = np.zeros(len(xyz), dtype=bool)
    keep = []
    rmax = float(tdist.max())
    for i in order:
        if removed[i]:
            continue
        keep.append(i)
        for j in tree.query_ball_point(xyz[i], rmax):
            if j != i and np.linalg.norm(xyz[i] - xyz[j]) <= max(tdist[i], tdist[j]):
                removed[j] = True
    return np.array(sorted(keep), dtype=int)


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
    :func:`picker3d.engine.mrcio.read_binned`, which never holds the full-size tomogram).
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
    (re-calibrated on the same probabilities of three benchmark models, 7 test tomograms:
    d/6 gave F1 d >= 12 0.80 / 0.80 / 0.79 against 0.78 / 0.74 / 0.79). Model files record
    the value they were calibrated with; files without it were calibrated at d/4.
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
