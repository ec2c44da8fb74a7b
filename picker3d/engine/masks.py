"""Weak labels from particle centres.

DeepETPicker (Supplementary §A.3, Eq. 2-4): every centre gets the voxels of
the cube M = [-r, r]^3 (r = d/2) where ``exp(-|p|^2 / 2r^2) > t_g``:
    tball  t_g = e^-1    -> |p| < sqrt(2) r inside the cube (truncated ball, the default)
    ball   t_g = e^-0.5  -> |p| < r
    cubic  t_g = e^-1.5  -> the whole cube
DeepFinder (Methods) uses one sphere per class with the class's own radius:
    sphere               -> |p| <= r
Sparse-label picking (the sparse-label paper, §3.2) uses Gaussian centre heatmaps:
    gaussian             -> exp(-|p|^2 / 2 sigma^2), sigma = d / 6 (our choice: the kernel
                            is ~1% at the particle radius), max over particles.

Label masks hold the class index (1-based, in the order of ``class_names``), 0 = background.
Where two particles' labels overlap, each voxel goes to the nearest centre (ties: the
earlier row), so the result does not depend on drawing order.
"""
import math

import numpy as np

from .errors import InputError
from .formats.table import diameter_of

MASK_TYPES = ("tball", "ball", "cubic", "sphere", "gaussian")
T_G = {"tball": math.exp(-1.0), "ball": math.exp(-0.5), "cubic": math.exp(-1.5)}


def mask_offsets(diameter, mask_type="tball"):
    """Integer offsets ``(n, 3)`` (dz, dy, dx) of one particle's label, and their |p|^2."""
    r = diameter / 2.0
    ri = int(math.floor(r)) if mask_type in T_G else int(math.ceil(r))
    g = np.mgrid[-ri:ri + 1, -ri:ri + 1, -ri:ri + 1].reshape(3, -1).T
    d2 = (g ** 2).sum(axis=1).astype(float)
    if mask_type == "cubic":
        keep = np.ones(len(g), dtype=bool)   # t_g <= e^-1.5: the whole cube (corners included)
    elif mask_type in T_G:
        keep = np.exp(-d2 / (2 * r * r)) > T_G[mask_type]
    elif mask_type == "sphere":
        keep = d2 <= r * r
    else:
        raise InputError(f"--type: unknown label mask type '{mask_type}' (known: {', '.join(MASK_TYPES)})")
    return g[keep], d2[keep]


def _class_index(table, class_names):
    if table.classes is None:
        if len(class_names) != 1:
            raise InputError("coordinates have no class column: give exactly one class in --diameters")
        return np.ones(len(table), dtype=int)
    lookup = {n: i + 1 for i, n in enumerate(class_names)}
    unknown = sorted(set(table.classes.tolist()) - set(lookup))
    if unknown:
        raise InputError(f"--diameters: no diameter for class(es) {', '.join(unknown)} "
                         f"(given: {', '.join(class_names)})")
    return np.array([lookup[c] for c in table.classes])


def label_mask(shape, table, diameters, mask_type="tball", class_names=None):
    """Integer label volume ``(Z, Y, X)`` from a CoordTable; see the module docstring."""
    if mask_type == "gaussian":
        return gaussian_heatmap(shape, table, diameters, class_names)
    class_names = class_names or [k for k in diameters if k != "*"] or table.class_names()
    cls = _class_index(table, class_names)
    labels = np.zeros(shape, dtype=np.int16)
    best = np.full(shape, np.inf, dtype=np.float32)
    cache = {}
    dims = np.array(shape)
    for (x, y, z), c in zip(table.xyz, cls):
        d = diameter_of(diameters, class_names[c - 1])
        if (d, mask_type) not in cache:
            cache[(d, mask_type)] = mask_offsets(d, mask_type)
        off, _ = cache[(d, mask_type)]
        centre = np.array([z, y, x])
        idx = np.round(centre).astype(int) + off
        ok = np.all((idx >= 0) & (idx < dims), axis=1)
        idx = idx[ok]
        # distance to the true (sub-voxel) centre decides overlaps
        dist = ((idx - centre) ** 2).sum(axis=1)
        cur = best[idx[:, 0], idx[:, 1], idx[:, 2]]
        win = dist < cur
        w = idx[win]
        best[w[:, 0], w[:, 1], w[:, 2]] = dist[win]
        labels[w[:, 0], w[:, 1], w[:, 2]] = c
    return labels


def gaussian_heatmap(shape, table, diameters, class_names=None, sigma_frac=1.0 / 6.0, per_class=False):
    """Gaussian centre heatmap in [0, 1] (max over particles); ``(C, Z, Y, X)`` if per_class."""
    class_names = class_names or [k for k in diameters if k != "*"] or table.class_names() or ["particle"]
    cls = _class_index(table, class_names) if (table.classes is not None or len(class_names) == 1) else None
    n_out = len(class_names) if per_class else 1
    heat = np.zeros((n_out,) + tuple(shape), dtype=np.float32)
    dims = np.array(shape)
    for i, (x, y, z) in enumerate(table.xyz):
        c = 1 if cls is None else cls[i]
        sigma = max(diameter_of(diameters, class_names[c - 1]) * sigma_frac, 0.5)
        r = int(math.ceil(3 * sigma))
        centre = np.array([z, y, x])
        lo = np.maximum(np.floor(centre).astype(int) - r, 0)
        hi = np.minimum(np.floor(centre).astype(int) + r + 2, dims)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        g = np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma * sigma))
        sl = (c - 1 if per_class else 0, slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        np.maximum(heat[sl], g, out=heat[sl])
    return heat if per_class else heat[0]
