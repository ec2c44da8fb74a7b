"""Reference-free alignment and averaging of a class's sub-volumes, with the missing wedge
masked in Fourier space, and the Fourier shell correlation of two half averages.

The classic iterative scheme (as in Dynamo or PEET; the alternative the Gum-Net
compares against): every member is matched to the current reference over a grid of
rotations by the constrained cross-correlation of Xu et al. (Gum-Net ref. [17]) — the
rotated reference, multiplied by the member's missing-wedge mask, correlated with the
member over all translations at once by FFT; the members are rotated and shifted onto the
reference and averaged in Fourier space, each Fourier voxel divided by how many members
measured it (the wedges rotated with them); the average is the next reference. Coarse
iterations run on binned boxes over the whole rotation grid, the last ones at full size
on a finer grid around each member's rotation.

Conventions (those of the simulator's ground truth): a member is ``R`` applied to the
reference, then shifted by ``t``: ``member(x) = reference(R^-1 (x - c - t))`` with ``x``
and ``t`` in (x, y, z) voxels and ``c`` the box centre; ``R`` is reported as ZYZ Euler
angles ``rot tilt psi`` in degrees (scipy's intrinsic "ZYZ", ``R = Rz(rot) Ry(tilt)
Rz(psi)``), ``t`` as ``shift_x shift_y shift_z``.

FSC (Gum-Net §S3.5.2, Eq. 4) between the averages of two random halves of the members;
resolution at the 0.143 and 0.5 criteria, in Å, where the curve first falls below them.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..errors import InputError
from .boxes import bin_boxes
from .fsc import fsc, fsc_weighted, resolution


def rotation_grid(step_deg):
    """Rotations about ``step_deg`` apart (scipy ``Rotation``): directions of the rotated z
    axis on a Fibonacci sphere lattice of that spacing, each with in-plane angles (psi) at
    that step. 30 degrees: ~550 rotations; 15: ~4,400."""
    step = math.radians(step_deg)
    n_dir = max(2, int(round(4 * math.pi / step ** 2)))
    k = np.arange(n_dir) + 0.5
    tilt = np.arccos(1 - 2 * k / n_dir)
    rot = (np.pi * (1 + 5 ** 0.5) * k) % (2 * np.pi)
    psis = np.arange(0, 2 * np.pi, 2 * np.pi / max(1, int(round(2 * np.pi / step))))
    eul = np.array([(r, t, p) for r, t in zip(rot, tilt) for p in psis])
    return Rotation.from_euler("ZYZ", eul)


def local_rotations(centre, step_deg, n=2):
    """Rotations within ``n`` steps of ``centre`` (a scipy Rotation): small rotations about
    x, y and z composed, ``(2n + 1)^3`` in all, the identity first."""
    offsets = np.arange(-n, n + 1) * math.radians(step_deg)
    vecs = np.array([(a, b, c) for a in offsets for b in offsets for c in offsets])
    vecs = vecs[np.argsort(np.linalg.norm(vecs, axis=1), kind="stable")]
    return Rotation.from_rotvec(vecs) * centre


def wedge_mask(box, tilt_range=60.0):
    """Fourier-space mask (unshifted FFT layout, ``box``³, z y x) of a single-axis tilt
    series about y from -tilt_range to +tilt_range degrees: 1 where measured, 0 in the
    missing wedge (|kz| > |kx| tan(tilt_range)). 90 or more: no wedge."""
    if tilt_range >= 90:
        return np.ones((box,) * 3, np.float32)
    f = np.fft.fftfreq(box)
    kz, _, kx = np.meshgrid(f, f, f, indexing="ij")
    measured = np.abs(kz) <= np.abs(kx) * math.tan(math.radians(tilt_range)) + 1e-9
    return measured.astype(np.float32)


def soft_sphere(box, radius=None, edge=2.0):
    """A sphere of ``radius`` (default: just inside the box) with a cosine edge."""
    radius = (box / 2.0 - edge - 1) if radius is None else radius
    c = (box - 1) / 2.0
    r = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(box) - c] * 3, indexing="ij")))
    return np.clip(0.5 + 0.5 * np.cos(np.pi * np.clip((r - radius) / edge, 0, 1)), 0, 1).astype(np.float32) * (
        r <= radius + edge)


def _grids(matrices, shifts, box):
    """Sampling grids that rotate volumes by ``matrices`` (n, 3, 3; xyz) about the box centre
    and shift them by ``shifts`` (n, 3; xyz voxels): out(x) = in(R^-1 (x - c - t) + c)."""
    inv = np.transpose(matrices, (0, 2, 1))                     # R^-1 of a rotation
    scale = 2.0 / box                                           # voxels -> normalised units
    theta = np.zeros((len(matrices), 3, 4), np.float32)
    theta[:, :, :3] = inv
    theta[:, :, 3] = -np.einsum("nij,nj->ni", inv, shifts) * scale
    return F.affine_grid(torch.from_numpy(theta), (len(matrices), 1, box, box, box), align_corners=False)


def transform_volumes(vols, matrices, shifts=None, mode="bilinear"):
    """Each of ``vols`` (n, b, b, b) rotated by its matrix and shifted (see :func:`_grids`);
    a single volume is transformed by every matrix."""
    vols = torch.as_tensor(np.asarray(vols, np.float32))
    matrices = np.asarray(matrices, np.float64).reshape(-1, 3, 3)
    n, box = len(matrices), vols.shape[-1]
    shifts = np.zeros((n, 3)) if shifts is None else np.asarray(shifts, np.float64).reshape(n, 3)
    if vols.ndim == 3:
        vols = vols[None].expand(n, -1, -1, -1)
    grid = _grids(matrices, shifts, box)
    out = F.grid_sample(vols[:, None], grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out[:, 0].numpy()


def _shift_window(box, max_shift):
    """Flat indices of the FFT correlation volume that hold shifts within ``max_shift``
    (xyz order of the shifts they stand for)."""
    s = np.arange(-max_shift, max_shift + 1)
    dz, dy, dx = np.meshgrid(s, s, s, indexing="ij")
    idx = ((dz % box) * box + (dy % box)) * box + (dx % box)
    return idx.ravel(), np.stack([dx.ravel(), dy.ravel(), dz.ravel()], 1).astype(np.float64)


def _half_weights(b):
    """Weights of an rFFT half spectrum's voxels in Parseval's sum (the planes kx = 0 and,
    for an even side, kx = b/2 stand for themselves; the others for their mirror too)."""
    w = np.full(b // 2 + 1, 2.0)
    w[0] = 1.0
    if b % 2 == 0:
        w[-1] = 1.0
    return torch.as_tensor(np.broadcast_to(w, (b, b, b // 2 + 1)).copy(), dtype=torch.float32)


def _spectra(stack):
    """rFFT of each member (mean removed) and its Parseval-weighted power, flattened."""
    v = torch.as_tensor(np.asarray(stack, np.float32))
    b = v.shape[-1]
    x = torch.fft.rfftn(v - v.mean(dim=(1, 2, 3), keepdim=True), dim=(1, 2, 3))
    power = (x.abs() ** 2 * _half_weights(b)).reshape(len(v), -1) / b ** 3
    return x, power


def rotate_coverage(coverage, matrices):
    """A Fourier-space mask (unshifted layout) rotated by each matrix, as rFFT halves."""
    b = coverage.shape[-1]
    turned = transform_volumes(np.fft.fftshift(coverage), matrices, mode="nearest")
    return torch.as_tensor(np.fft.ifftshift(turned, axes=(1, 2, 3))[..., :b // 2 + 1] > 0.5)


def _reference_spectra(reference, matrices, wedge_half, coverage):
    """rFFT of the reference rotated by each matrix, masked where both the member (its
    wedge) and the rotated reference (its own coverage, rotated) were measured — the
    constrained correlation's common region —, the masks and the reference's norms there."""
    b = reference.shape[-1]
    mask = wedge_half[None] * rotate_coverage(coverage, matrices)
    mask[:, 0, 0, 0] = 0
    r = torch.fft.rfftn(torch.as_tensor(transform_volumes(reference, matrices)), dim=(1, 2, 3)) * mask
    norm = torch.sqrt((r.abs() ** 2 * _half_weights(b)).sum(dim=(1, 2, 3)) / b ** 3).clamp_min(1e-6)
    return r, mask.reshape(len(matrices), -1).float(), norm


def _search_inputs(stack, wedge, max_shift, coverage):
    """What both searches start from: the box side, the reference's coverage (default:
    complete), the members' spectra and powers, the wedge's rFFT half and the shift window."""
    b = stack.shape[-1]
    coverage = np.ones((b,) * 3, np.float32) if coverage is None else coverage
    x, power = _spectra(stack)
    idx, shift_xyz = _shift_window(b, int(max_shift))
    return (b, coverage, x, power, torch.as_tensor(wedge[..., :b // 2 + 1]), torch.as_tensor(idx),
            shift_xyz)


def search_global(stack, reference, rotations, wedge, max_shift, chunk=None, coverage=None):
    """For each member of ``stack``, the rotation of ``rotations`` (scipy Rotation) and the
    shift within ``max_shift`` voxels that best correlate the rotated reference with it over
    the Fourier region both measured (the member's ``wedge``, the reference's ``coverage``
    rotated with it; default: the reference is complete). Returns (rotation index, shift
    xyz (n, 3), score); the score is the correlation coefficient in that region."""
    b, coverage, x, power, wh, idx, shift_xyz = _search_inputs(stack, wedge, max_shift, coverage)
    mats = rotations.as_matrix()
    n = len(stack)
    # rotations per pass: about 2e8 correlation voxels (~2 GB of intermediates) at a time
    chunk = chunk or int(np.clip(2e8 // (n * b ** 3), 1, 48))
    best = torch.full((n,), -np.inf)
    best_rot = torch.zeros(n, dtype=torch.long)
    best_shift = torch.zeros(n, dtype=torch.long)
    for start in range(0, len(mats), chunk):
        r, mask, norm_r = _reference_spectra(reference, mats[start:start + chunk], wh, coverage)
        norm_x = torch.sqrt(power @ mask.T).clamp_min(1e-6)                    # (n, rotations)
        cc = torch.fft.irfftn(x[:, None] * torch.conj(r)[None], s=(b, b, b), dim=(2, 3, 4))
        cc = cc.reshape(n, len(r), -1)[:, :, idx] / (norm_x[:, :, None] * norm_r[None, :, None])
        score, where = cc.reshape(n, -1).max(dim=1)
        better = score > best
        best[better] = score[better]
        best_rot[better] = start + (where // len(idx))[better]
        best_shift[better] = (where % len(idx))[better]
    return best_rot.numpy(), shift_xyz[best_shift.numpy()], best.numpy()


def search_local(stack, reference, matrices, wedge, max_shift, chunk=8, coverage=None):
    """Like :func:`search_global`, each member over its own rotations ``matrices`` (n, m, 3,
    3). Returns (index into each member's m rotations, shift xyz, score)."""
    b, coverage, x, power, wh, idx, shift_xyz = _search_inputs(stack, wedge, max_shift, coverage)
    n, m = matrices.shape[:2]
    out_rot, out_shift, out_score = np.zeros(n, int), np.zeros((n, 3)), np.zeros(n)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        k = sl.stop - sl.start
        r, mask, norm_r = _reference_spectra(reference, matrices[sl].reshape(-1, 3, 3), wh, coverage)
        r, mask, norm_r = r.reshape(k, m, *r.shape[1:]), mask.reshape(k, m, -1), norm_r.reshape(k, m)
        norm_x = torch.sqrt(torch.einsum("nv,nmv->nm", power[sl], mask)).clamp_min(1e-6)
        cc = torch.fft.irfftn(x[sl, None] * torch.conj(r), s=(b, b, b), dim=(2, 3, 4))
        cc = cc.reshape(k, m, -1)[:, :, idx] / (norm_x[:, :, None] * norm_r[:, :, None])
        score, where = cc.reshape(k, -1).max(dim=1)
        best_r = (where // len(idx)).numpy()
        out_rot[sl] = best_r
        out_shift[sl] = shift_xyz[(where % len(idx)).numpy()] + _subvoxel(
            cc[torch.arange(k), torch.as_tensor(best_r)].numpy(), (where % len(idx)).numpy(), int(max_shift))
        out_score[sl] = score.numpy()
    return out_rot, out_shift, out_score


def _subvoxel(windows, best, s):
    """Sub-voxel offsets (xyz) of correlation peaks: a parabola through the peak and its two
    neighbours on each axis of the (2s + 1)^3 shift window (none at the window's edge)."""
    side = 2 * s + 1
    cubes = windows.reshape(len(windows), side, side, side)       # z, y, x as in _shift_window
    out = np.zeros((len(windows), 3))
    for i, (cube, flat) in enumerate(zip(cubes, best)):
        p = np.unravel_index(int(flat), cube.shape)
        for axis in range(3):
            if 0 < p[axis] < side - 1:
                lo, hi = list(p), list(p)
                lo[axis] -= 1
                hi[axis] += 1
                a, c, b = cube[tuple(lo)], cube[p], cube[tuple(hi)]
                denom = a - 2 * c + b
                if denom < 0:
                    out[i, 2 - axis] = float(np.clip(0.5 * (a - b) / denom, -0.5, 0.5))
    return out


def wedge_weighted_average(stack, matrices, shifts, wedge, floor=0.1):
    """The members brought onto the reference (their shift and rotation undone in one
    interpolation) and averaged in Fourier space: each Fourier voxel divided by how many
    members measured it (their wedges rotated with them), at least ``floor`` x the number of
    members.
    Returns (average, its Fourier coverage: where some member measured it)."""
    n = len(stack)
    inv = np.transpose(np.asarray(matrices, np.float64), (0, 2, 1))
    # back onto the reference in one interpolation: back(y) = member(R (y - c) + c + t) is the
    # transform by R^-1 with the shift -R^-1 t (undoing the shift, then the rotation, would
    # interpolate, hence blur, every member twice)
    back = transform_volumes(stack, inv, -np.einsum("nij,nj->ni", inv, np.asarray(shifts, np.float64)))
    spec = np.fft.fftn(back, axes=(1, 2, 3)).sum(axis=0)
    # a wedge turns with its member: rotate the (centred) mask the same way
    centred = np.fft.fftshift(wedge)
    weight = np.fft.ifftshift(transform_volumes(centred, inv).sum(axis=0))
    coverage = (weight >= 0.5).astype(np.float32)         # measured by at least one member
    weight = np.maximum(weight, floor * n)
    return np.real(np.fft.ifftn(spec / weight)).astype(np.float32), coverage


def _lowpass(vol, sigma):
    return ndimage.gaussian_filter(vol, sigma) if sigma > 0 else vol


def _prepare(ref, mask, sigma):
    """The next reference: low-passed, zero mean, masked."""
    ref = _lowpass(ref, sigma)
    ref = (ref - ref[mask > 0.5].mean()) * mask
    return (ref / (ref.std() + 1e-6)).astype(np.float32)


def align_class(stack, tilt_range=60.0, voxel_size=1.0, coarse_step=30.0, fine_step=10.0, coarse_iterations=3,
                fine_iterations=3, max_shift=None, starts=3, seed=0, log=None, initial=None):
    """Reference-free alignment of one class's members (n, b, b, b), each normalised.

    Coarse: the boxes binned to at most 24 voxels, the whole rotation grid at ``coarse_step``
    degrees; ``starts`` members (chosen at random) each seed a reference, and the one whose
    average the members correlate with best is refined for ``coarse_iterations``. Fine: the
    full boxes, every member's rotation refined over a local grid of ``fine_step`` degrees,
    halved each of the ``fine_iterations`` times. ``initial``: each member's rotation (n, 3,
    3) and shift (n, 3; voxels) onto a common frame found elsewhere (e.g. by
    :func:`picker3d.engine.classification.refinement.refine_and_merge`): the coarse search is
    skipped. Returns a dict: ``average`` (weighted by
    its FSC, :func:`fsc_weighted`), the two half averages, unweighted (``half1``, ``half2``:
    a random split of the members, each averaged with the same alignment), ``fsc`` per
    shell, ``resolution_0143`` and ``resolution_05`` (Å), per member ``matrices`` (n, 3, 3),
    ``shifts`` (n, 3; xyz voxels), ``euler`` (n, 3; ZYZ rot tilt psi, degrees) and
    ``scores`` (correlation with the final average)."""
    stack = np.asarray(stack, np.float32)
    n, b = len(stack), stack.shape[-1]
    if n < 2:
        raise InputError(f"alignment: a class of {n} member(s) has no two halves to compare")
    rng = np.random.default_rng(seed)
    if initial is not None:
        R, t = (np.asarray(v, np.float64) for v in initial)
        return _fine_alignment(stack, R, t, tilt_range, voxel_size, fine_step, fine_iterations, max_shift, rng, log)
    factor = max(1, int(math.ceil(b / 24.0)))     # coarse boxes of 12-24 voxels
    coarse = bin_boxes(stack, factor) if factor > 1 else stack
    bc = coarse.shape[-1]
    shift_c = int(max_shift // factor) if max_shift is not None else max(1, bc // 6)
    mask_c, wedge_c = soft_sphere(bc), wedge_mask(bc, tilt_range)
    grid = rotation_grid(coarse_step)
    mats = grid.as_matrix()
    masked = coarse * mask_c

    def coarse_round(ref, coverage):
        rot, shift, score = search_global(masked, ref, grid, wedge_c, shift_c, coverage=coverage)
        return (mats[rot], shift, score) + wedge_weighted_average(coarse, mats[rot], shift, wedge_c)

    best = None
    # a seed member lacks its own missing wedge: the correlation is taken where both measured,
    # else members would align their wedges to its wedge rather than their density to its
    for i in rng.choice(n, size=min(starts, n), replace=False):
        R, t, score, avg, cov = coarse_round(_prepare(coarse[i], mask_c, 1.0), wedge_c)
        if best is None or score.mean() > best[2].mean():
            best = (R, t, score, avg, cov)
    R, t, score, avg, cov = best
    for _ in range(coarse_iterations):
        R, t, score, avg, cov = coarse_round(_prepare(avg, mask_c, 0.7), cov)
    if log:
        log(f"alignment: {n} members, coarse ({bc}^3, {len(grid)} rotations): mean score {score.mean():.3f}")
    # full size: the coarse shifts scaled, each rotation refined locally
    return _fine_alignment(stack, R, t * factor, tilt_range, voxel_size, fine_step, fine_iterations, max_shift, rng,
                           log)


def _fine_alignment(stack, R, t, tilt_range, voxel_size, fine_step, fine_iterations, max_shift, rng, log):
    """:func:`align_class`'s fine stage from rotations ``R`` and shifts ``t`` (voxels), and
    its result."""
    n, b = len(stack), stack.shape[-1]
    mask = soft_sphere(b)
    wedge = wedge_mask(b, tilt_range)
    shift_f = int(max_shift) if max_shift is not None else max(1, b // 6)
    avg, cov = wedge_weighted_average(stack, R, t, wedge)
    for k in range(fine_iterations):
        ref = _prepare(avg, mask, 0.5)
        # the local grid halves each time: fine_step, fine_step / 2, ...
        local = np.stack([local_rotations(Rotation.from_matrix(m), fine_step / 2 ** k, 1).as_matrix() for m in R])
        pick, t, score = search_local(stack * mask, ref, local, wedge, shift_f, coverage=cov)
        R = local[np.arange(n), pick]
        avg, cov = wedge_weighted_average(stack, R, t, wedge)
    if fine_iterations == 0:
        score = np.full(n, np.nan)
    halves = rng.permutation(n)
    h1, h2 = np.sort(halves[: n // 2]), np.sort(halves[n // 2:])
    half1 = wedge_weighted_average(stack[h1], R[h1], t[h1], wedge)[0]
    half2 = wedge_weighted_average(stack[h2], R[h2], t[h2], wedge)[0]
    curve = fsc(half1 * mask, half2 * mask)
    if log:
        log(f"alignment: fine ({b}^3): mean score {score.mean():.3f}; FSC 0.143 at "
            f"{resolution(curve, b, voxel_size, 0.143):.1f} Å")
    return {"average": fsc_weighted(avg, curve), "half1": half1, "half2": half2, "fsc": curve,
            "resolution_0143": resolution(curve, b, voxel_size, 0.143),
            "resolution_05": resolution(curve, b, voxel_size, 0.5),
            "matrices": R, "shifts": t, "scores": score,
            "euler": Rotation.from_matrix(R).as_euler("ZYZ", degrees=True)}


def correlation_with(volume, truth, step=15.0, tilt_range=90.0, lowpass_sigma=0.0):
    """Pearson correlation of ``volume`` with ``truth`` after aligning ``truth`` onto it
    (over the rotation grid at ``step`` degrees, then locally), inside a sphere: how close an
    average in its own frame is to a known density. ``lowpass_sigma`` (voxels) blurs the
    truth first (to compare at the average's resolution)."""
    truth = _lowpass(np.asarray(truth, np.float32), lowpass_sigma)
    b = volume.shape[-1]
    mask = soft_sphere(b)
    wedge = wedge_mask(b, tilt_range)
    v = (volume * mask)[None]
    grid = rotation_grid(step)
    rot, shift, _ = search_global(v, truth * mask, grid, wedge, max(1, b // 6))
    local = local_rotations(grid[int(rot[0])], step / 2, 2).as_matrix()[None]
    pick, shift, _ = search_local(v, truth * mask, local, wedge, max(1, b // 6))
    moved = transform_volumes(truth, local[0, pick[0]][None], shift)[0]
    inside = mask > 0.5
    return float(np.corrcoef(volume[inside], moved[inside])[0, 1])
