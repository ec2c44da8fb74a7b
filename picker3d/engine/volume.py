"""Tomogram normalisation and binning (numpy only: no torch, no Scipion).

The network's input is made here, for training and for picking alike, and the
classification cuts its boxes in the same normalisation.
"""
import numpy as np
from scipy import ndimage
from scipy.stats import norm

# share of voxels left out at each end when the normalisation is estimated, and the standard
# deviation of a unit normal variable cut there (so Gaussian data keep the plain estimate)
ROBUST_TAIL = 0.005
_TRIMMED_NORMAL_STD = float(np.sqrt(1 - 2 * norm.ppf(1 - ROBUST_TAIL) * norm.pdf(norm.ppf(1 - ROBUST_TAIL))
                                    / (1 - 2 * ROBUST_TAIL)))
_STATS_SAMPLE = 1 << 20
CLIP_STD = 3.0          # the network sees the normalised tomogram clipped here (normalize)
NORMALISED = (0.0, 1.0)  # predict_volume(stats=...) of a volume normalize() already returned


def volume_stats(volume):
    """(mean, std) that normalise a tomogram: zero mean, unit standard deviation per tomogram
    (DeepETPicker §A.1, Eq. 1), estimated robustly.

    Real tomograms hold gold beads tens of standard deviations dark, hot voxels and constant
    fill around a rotated or trimmed reconstruction; a plain mean and std follow them, so the
    same particles reach the network at another scale in every tomogram. The estimate leaves
    out a fill value (one value repeated in more than 1 % of the voxels of a tomogram that is
    not coarsely quantised), then the darkest and brightest 0.5 % of the rest, and rescales
    the remaining spread by the std of a unit normal cut at the same points — equal to the
    plain estimate on Gaussian data (0.98 of it on the simulator's tomograms, whose dense
    particles give longer tails). At most 1 M voxels, on a regular stride, enter the
    estimate, so a 200x512x512 tomogram costs ~0.15 s.
    """
    flat = np.asarray(volume).reshape(-1)
    sample = flat[::max(1, flat.size // _STATS_SAMPLE)].astype(np.float64)
    values, counts = np.unique(sample, return_counts=True)
    if len(values) > 1000 and counts.max() > 0.01 * sample.size:
        sample = sample[sample != values[counts.argmax()]]
    if sample.size < 2:
        return float(values[counts.argmax()]), 0.0
    k = int(np.ceil(ROBUST_TAIL * sample.size))      # by rank: ties at a cut cannot keep a tail
    inner = np.sort(sample)[k:sample.size - k]
    if inner.size < 2 or not inner.std() > 0:      # (nearly) constant volume: plain estimate
        return float(sample.mean()), float(sample.std())
    return float(inner.mean()), float(inner.std() / _TRIMMED_NORMAL_STD)


def normalize(volume, stats=None):
    """The tomogram normalised by :func:`volume_stats` (or ``stats=(mean, std)``) and clipped
    to ±``CLIP_STD`` (float32): the network's input, in training and in picking.

    Clipping is a departure from DeepETPicker (§A.1 normalises only). Two models trained before
    it, each on a held-out tomogram with 40 gold beads (radius 5 voxels, 30 std dark) added:
    F1 0.26 / 0.59 with the plain mean and std, 0.45 / 0.60 with the robust estimate alone,
    0.75 / 0.78 clipped at ±3 (clean tomograms 0.78-0.80 with all three). Clipped at ±5 or
    ±4 instead: 0.72-0.73.
    """
    mean, std = stats if stats is not None else volume_stats(volume)
    v = (np.asarray(volume, dtype=np.float32) - np.float32(mean)) / np.float32(std + 1e-6)
    return np.clip(v, -CLIP_STD, CLIP_STD, out=v)


def bin_volume(volume, factor):
    """Mean over ``factor``³ blocks (the volume is cropped to a multiple of ``factor``)."""
    if factor == 1:
        return np.asarray(volume, dtype=np.float32)
    Z, Y, X = (n // factor for n in volume.shape)
    v = np.asarray(volume[:Z * factor, :Y * factor, :X * factor], dtype=np.float32)
    return v.reshape(Z, factor, Y, factor, X, factor).mean(axis=(1, 3, 5))


def to_binned(xyz, factor):
    """Voxel coordinates (centre of voxel i is i) in a ``factor``-binned volume."""
    return (np.asarray(xyz, dtype=float) + 0.5) / factor - 0.5


def from_binned(xyz, factor):
    return (np.asarray(xyz, dtype=float) + 0.5) * factor - 0.5


# --- background-independent input (local normalisation) ------------------------------------
# the smoothing scale of the local normalisation, in multiples of the largest particle diameter
# (network voxels). Measured on bench_artefacts' carbon edge with one model: 2 -> F1 0.48, 1 ->
# 0.57, 0.5 -> 0.61 (clean 0.70 at all three); a smaller scale follows the carbon more closely
# but also the density of crowded regions, which it would wash out: 1 (docs/picking.md)
LOCAL_SCALE = 1.0


def _box_smooth(volume, sigma):
    """A Gaussian-like low-pass of standard deviation ``sigma`` voxels: three box filters per
    axis (cost independent of ``sigma``; a Gaussian of that width costs ~20 s on a
    200x512x512 tomogram)."""
    width = max(1, int(round(np.sqrt(4.0 * sigma * sigma + 1.0))))
    out = np.asarray(volume, dtype=np.float32)
    for _ in range(3):
        out = ndimage.uniform_filter(out, size=width, mode="reflect")
    return out


def _remove_plane(v, step=4):
    """``v`` minus its least-squares linear trend a + b x + c y + d z (fitted on every
    ``step``-th voxel): a gradient across the volume, which a low-pass cannot follow up to
    the faces."""
    grids = np.meshgrid(*[np.arange(0, n, step, dtype=np.float32) for n in v.shape], indexing="ij")
    design = np.stack([np.ones(grids[0].size, np.float32)] + [g.ravel() for g in grids], 1)
    coef, *_ = np.linalg.lstsq(design, v[::step, ::step, ::step].ravel(), rcond=None)
    z, y, x = np.ogrid[:v.shape[0], :v.shape[1], :v.shape[2]]
    return v - (coef[0] + coef[1] * z + coef[2] * y + coef[3] * x).astype(np.float32)


def local_normalize(volume, sigma):
    """The network's input with slow background removed: the tomogram normalised as
    :func:`normalize`, its linear trend and then its low-pass at ``sigma`` voxels (the largest
    particle's diameter, :data:`LOCAL_SCALE`) subtracted, divided by the local standard
    deviation at the same scale, normalised and clipped again. A thickness gradient, a carbon
    edge or thicker ice then no longer move the intensities the network reads; a particle
    loses a few per cent of its mean contrast (a box low-pass of its own diameter averages it
    with a much larger volume around it)."""
    v = _remove_plane(normalize(volume))
    v -= _box_smooth(v, sigma)
    local_var = _box_smooth(v * v, sigma)
    v /= np.sqrt(local_var + 1e-3)
    return normalize(v)


def network_input(volume, norm=None):
    """The normalised tomogram a network reads, by the model's ``norm`` record: ``{"kind":
    "local", "sigma": s}`` (:func:`local_normalize`), or None / ``"global"`` for model files
    trained before the local normalisation (:func:`normalize`)."""
    if isinstance(norm, dict) and norm.get("kind") == "local":
        return local_normalize(volume, float(norm["sigma"]))
    return normalize(volume)


def resampled_shape(shape, voxel_size, new_voxel_size):
    """The shape of a volume of ``shape`` resampled from ``voxel_size`` to ``new_voxel_size``."""
    return tuple(max(2, int(round(n * float(voxel_size) / float(new_voxel_size)))) for n in shape)


def resample_scales(shape, voxel_size, new_voxel_size):
    """Per axis (x, y, z): a position in the resampled volume's voxels times this is one in the
    original's (``n / n'`` per axis, the rounding of the sizes included)."""
    out = resampled_shape(shape, voxel_size, new_voxel_size)
    return np.array([shape[2] / out[2], shape[1] / out[1], shape[0] / out[0]])


def resample(volume, voxel_size, new_voxel_size):
    """The volume at ``new_voxel_size`` Å/voxel by Fourier cropping or zero padding (the
    exact band limit, as cryo-EM packages rescale: linear interpolation dulled the noise at the
    network's scale: a 13.5 Å tomogram picked at F1 0.28 instead of 0.71). Voxel i of the
    result lies at ``i · n / n'`` voxels of the input along each axis (:func:`resample_scales`)."""
    from scipy import fft
    vol = np.asarray(volume, dtype=np.float32)
    shape_out = resampled_shape(vol.shape, voxel_size, new_voxel_size)
    spec = fft.rfftn(vol, workers=-1)
    spec = fft.fftshift(spec, axes=(0, 1))
    out = np.zeros(shape_out[:2] + (shape_out[2] // 2 + 1,), dtype=spec.dtype)
    src, dst = [], []
    for n, m in zip(vol.shape[:2], shape_out[:2]):
        keep = min(n, m)
        src.append(slice(n // 2 - keep // 2, n // 2 - keep // 2 + keep))
        dst.append(slice(m // 2 - keep // 2, m // 2 - keep // 2 + keep))
    last = min(spec.shape[2], out.shape[2])
    out[dst[0], dst[1], :last] = spec[src[0], src[1], :last]
    out = fft.ifftshift(out, axes=(0, 1))
    result = fft.irfftn(out, s=shape_out, workers=-1)
    return (result * (np.prod(shape_out) / np.prod(vol.shape))).astype(np.float32)
