"""Overlap-tile inference (DeepETPicker §A.3): tiles of side ``tile`` (a multiple
of 8; DeepETPicker's default N = 72) overlap by ``pad`` voxels on each side (DeepETPicker's
pad_size = 12); only the central ``tile - 2*pad`` of every tile is kept, so borders of tiles
never reach the output. At the volume's own faces the tiles are flush with the face (no
mirrored padding): the network sees a face as it saw one in its training patches. Test-time
flips average mirrored copies."""
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..network import autocast, autocast_dtype
from ..volume import normalize, volume_stats


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


class _TileProgress:
    """Progress of the tiles computed: a live line on a terminal, else every tenth to ``log``."""

    def __init__(self, total, progress, log):
        self.total, self.done, self.t0 = total, 0, time.time()
        self.live = progress and sys.stderr.isatty()
        self.log = log if (progress or log) else None

    def tick(self):
        self.done += 1
        if not (self.live or self.log):
            return
        el = time.time() - self.t0
        msg = f"tiles {self.done}/{self.total}  elapsed {el:.0f}s  ETA {el / self.done * (self.total - self.done):.0f}s"
        if self.live:
            print("\r" + msg, end="", file=sys.stderr, flush=True)
        elif self.log and (self.done == self.total or self.done % max(1, self.total // 10) == 0):
            self.log(msg)

    def close(self):
        if self.live:
            print(file=sys.stderr)


def _check_tiling(model, tile, pad, flips):
    m = model.multiple
    if tile % m:
        raise ValueError(f"tile {tile} must be a multiple of {m}")
    if tile - 2 * pad <= 0:
        raise ValueError(f"tile {tile} must exceed twice the padding {pad}")
    if flips not in FLIP_SETS:
        raise ValueError(f"flips must be one of {sorted(FLIP_SETS)}, not {flips}")


def _flip_plan(flips, grid, Z, z0, z1):
    """Per mirrored copy: (flipped axes, its planes [f0, f1) that hold [z0, z1), the z rows of
    tiles that reach them)."""
    _, starts, bounds = grid
    plan = []
    for axes in FLIP_SETS[flips]:
        # the planes [z0, z1) lie at [Z - z1, Z - z0) of a volume mirrored in z
        f0, f1 = (Z - z1, Z - z0) if 0 in axes else (z0, z1)
        rows = [i for i in range(len(starts[0])) if bounds[0][i] < f1 and bounds[0][i + 1] > f0]
        plan.append((axes, f0, f1, rows))
    return plan


def _predict_row(net, volume, grid, i, idx, dst, p0, p1, report):
    """Tiles of the z row ``i`` of ``grid``: their kept planes in [p0, p1) go to
    dst[:, plane - p0]. ``net`` = (model, device, autocast dtype, normalisation stats);
    ``idx`` the index order of each axis (reversed for a mirrored copy)."""
    model, dev, amp, stats = net
    sides, starts, bounds = grid
    Z, Y, X = volume.shape
    a = starts[0][i]
    with torch.inference_mode():
        # one tile per forward pass: on a CPU larger batches are not faster (measured)
        for j, b in enumerate(starts[1]):
            for k, c in enumerate(starts[2]):
                sub = normalize(volume[np.ix_(idx[0][a:a + sides[0]], idx[1][b:b + sides[1]],
                                              idx[2][c:c + sides[2]])], stats)
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
                report.tick()


def _predict_tiles(model, volume, tile, pad, device, progress, log, flips, z_range=None, stats=None, cache=None,
                   precision="auto"):
    _check_tiling(model, tile, pad, flips)
    Z, Y, X = volume.shape
    z0, z1 = z_range if z_range is not None else (0, Z)
    # tiles flush with the volume's faces, overlapping each other (_axis_tiles); they are cut
    # from the volume by index arithmetic, so no padded or mirrored copy of it is made
    grid = _tile_grid(volume.shape, tile, pad, model.multiple)
    sides, starts, bounds = grid
    K = model.n_classes + 1
    out = np.zeros((K, z1 - z0, Y, X), dtype=np.float32)
    model.eval()
    dev = torch.device(device)
    net = (model, dev, autocast_dtype(dev, precision), stats if stats is not None else volume_stats(volume))
    plan = _flip_plan(flips, grid, Z, z0, z1)
    per_row = len(starts[1]) * len(starts[2])
    report = _TileProgress(per_row * sum(1 for axes, _, _, rows in plan for i in rows
                                         if cache is None or (axes, starts[0][i], tuple(sides)) not in cache),
                           progress, log)
    used = set()
    for axes, f0, f1, rows in plan:
        # a mirrored copy (test-time flip) is read backwards
        idx = [np.arange(n)[::-1] if ax in axes else np.arange(n) for ax, n in enumerate(volume.shape)]
        acc = np.zeros((K, f1 - f0, Y, X), dtype=np.float32)
        for i in rows:
            if cache is None:
                _predict_row(net, volume, grid, i, idx, acc, f0, f1, report)
                continue
            # slab-wise picking: a row of tiles reaching into the next slab is kept, not recomputed
            key = (axes, starts[0][i], tuple(sides))
            lo, hi = bounds[0][i], bounds[0][i + 1]
            if key not in cache:
                block = np.zeros((K, hi - lo, Y, X), dtype=np.float32)
                _predict_row(net, volume, grid, i, idx, block, lo, hi, report)
                cache[key] = block          # only once complete (out of memory may stop a row)
            used.add(key)
            za, zb = max(lo, f0), min(hi, f1)
            acc[:, za - f0:zb - f0] = cache[key][:, za - lo:zb - lo]
        out += np.flip(acc, tuple(a + 1 for a in axes)) if axes else acc
    if cache is not None:
        for key in [k for k in cache if k not in used]:     # slabs move one way: never needed again
            del cache[key]
    report.close()
    if len(plan) > 1:
        out /= len(plan)
    return out
