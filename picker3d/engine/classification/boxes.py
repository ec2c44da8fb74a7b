"""Sub-volumes of picks: extraction, normalisation, binning, contrast, class averages."""
import numpy as np

from ..errors import InputError
from ..volume import volume_stats


def normalize_box(stack):
    """Zero mean, unit std per box (in place on a float32 copy)."""
    stack = np.asarray(stack, dtype=np.float32).copy()
    axes = tuple(range(1, stack.ndim))
    stack -= stack.mean(axis=axes, keepdims=True)
    stack /= stack.std(axis=axes, keepdims=True) + 1e-6
    return stack


def bin_boxes(stack, binning):
    """Block-average a (n, b, b, b) stack by ``binning`` (the box is cropped to a multiple)."""
    if binning <= 1:
        return stack
    n, b = stack.shape[0], stack.shape[1] // binning * binning
    s = stack[:, :b, :b, :b].reshape(n, b // binning, binning, b // binning, binning, b // binning, binning)
    return s.mean(axis=(2, 4, 6))


def extract_subvolumes(volume, xyz, box, out_of_volume="pad", per_box=True):
    """Boxes of side ``box`` centred on ``xyz`` (n, 3; voxels, x = last axis) of ``volume``.

    The tomogram is normalised once (zero mean, unit std) and, with ``per_box``, each box
    again (``per_box=False`` keeps the tomogram's scale, for :func:`box_contrast`). A box
    reaching outside the volume is padded by mirroring the tomogram at its edge (``"pad"``;
    the mean where it lies wholly outside) or left out (``"skip"``). Returns ``(stack (m,
    box, box, box) float32, kept indices, n_outside)``.
    """
    if out_of_volume not in ("pad", "skip"):
        raise InputError(f"--out-of-volume: '{out_of_volume}' must be pad or skip")
    if box < 4:
        raise InputError(f"--box: {box} is too small (at least 4 voxels)")
    vol = np.asarray(volume, dtype=np.float32)
    mean, std = volume_stats(vol)
    std = std or 1.0
    shape = np.array(vol.shape)
    half = box // 2
    out, kept, outside = [], [], 0
    for i, (x, y, z) in enumerate(np.asarray(xyz, dtype=float).reshape(-1, 3)):
        c = np.rint([z, y, x]).astype(int)
        lo, hi = c - half, c - half + box
        if np.all(lo >= 0) and np.all(hi <= shape):
            sub = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        else:
            outside += 1
            if out_of_volume == "skip":
                continue
            sub = _mirrored_box(vol, lo, box, mean)
        out.append((sub - mean) / std)
        kept.append(i)
    stack = np.stack(out) if out else np.zeros((0, box, box, box), np.float32)
    return (normalize_box(stack) if per_box else stack), np.asarray(kept, dtype=int), outside


def _mirrored_box(vol, lo, box, mean):
    """The box from ``lo`` (z, y, x) reaching outside ``vol``: the missing part mirrored from
    the inside (a flat fill has no noise, and its density and spread then stand out in the
    radial profiles and the contrast as strongly as a gold bead); the tomogram mean where the
    box lies wholly outside."""
    shape = np.array(vol.shape)
    if np.any(lo + box <= 0) or np.any(lo >= shape):
        return np.full((box, box, box), mean, dtype=np.float32)
    idx = []
    for axis in range(3):
        i = np.arange(lo[axis], lo[axis] + box)
        n = shape[axis]
        period = 2 * n if n > 1 else 1
        i = np.mod(i, period)
        idx.append(np.where(i >= n, period - 1 - i, i))     # reflect about the edges
    return vol[np.ix_(*idx)].astype(np.float32)


def box_contrast(stack):
    """(n, 2): log standard deviation of each box, and the mean density within box/6 of its
    centre minus the mean beyond box/3 (the rim), both relative to the whole stack.

    Per-box normalisation (which the shape features need) removes how much density a box
    holds; these two rotation-invariant numbers keep it: gold and membranes are strong, and
    a particle puts density at the centre of its pick where an empty-ice pick puts none
    (measurements: docs/classification.md)."""
    stack = np.asarray(stack, dtype=np.float32)
    stack = (stack - stack.mean()) / (stack.std() + 1e-6)
    flat = stack.reshape(len(stack), -1)
    n = stack.shape[1]
    r = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij")))
    centre = r <= max(n / 6.0, 1.0)      # never empty, even for a tiny even-sized box
    shell = r > n / 3.0
    # density at the centre against the box's rim: what a particle puts where it was picked
    centre_mass = stack[:, centre].mean(axis=1) - stack[:, shell].mean(axis=1)
    return np.stack([np.log(flat.std(axis=1) + 1e-6), centre_mass], axis=1).astype(np.float32)


def class_averages(stack, labels):
    """(K, b, b, b) plain (unaligned) averages of each cluster's members."""
    k = int(labels.max()) + 1 if len(labels) else 0
    return np.stack([stack[labels == c].mean(axis=0) if np.any(labels == c)
                     else np.zeros(stack.shape[1:], np.float32) for c in range(k)]).astype(np.float32)
