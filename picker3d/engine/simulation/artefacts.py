"""What real tomograms bring that a clean simulation lacks, added to a reconstructed
tomogram: a thickness gradient, a carbon edge, ice contamination, empty ice above and below
the specimen, flipped contrast, another pixel size. ``picker3d simulate`` adds them on
request; the artefact benchmark and the tests make each variant of one tomogram with them.

Amplitudes are in units of the tomogram's robust standard deviation
(:func:`picker3d.engine.volume.volume_stats`), so "a gradient of 0.5" means the mean ramps by
±0.5 σ across the volume whatever the tomogram's scale.
"""
import numpy as np
from scipy import ndimage

from ..formats.table import CoordTable
from ..volume import volume_stats


def _std(volume):
    return volume_stats(volume)[1] or 1.0


def thickness_gradient(volume, amplitude, axis=2):
    """The mean ramping linearly from -amplitude to +amplitude σ along ``axis`` (2 = x), as
    ice that thickens across the field of view."""
    n = volume.shape[axis]
    ramp = np.linspace(-amplitude, amplitude, n, dtype=np.float32) * _std(volume)
    shape = [1, 1, 1]
    shape[axis] = n
    return (volume + ramp.reshape(shape)).astype(np.float32)


def carbon_edge(volume, fraction=0.15, density=2.0, seed=0, edge=2.0):
    """A band of dense material (darker by ``density`` σ, with a texture of its own) over the
    last ``fraction`` of y through the whole depth, its edge a smooth step ``edge`` voxels
    wide, as a carbon support film or a grid bar at the side of the field of view."""
    ny = volume.shape[1]
    y = np.arange(ny, dtype=np.float32)
    start = ny * (1.0 - fraction)
    from scipy.special import expit
    step = expit((y - start) / edge)
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.standard_normal(volume.shape).astype(np.float32), 3.0)
    texture /= texture.std() + 1e-6
    s = _std(volume)
    band = step[None, :, None] * (-density + 0.3 * texture) * s
    return (volume + band).astype(np.float32)


def ice_contamination(volume, n_blobs=6, seed=0, radius=(6.0, 14.0), density=3.0):
    """``n_blobs`` dark, roughly spherical blobs (radius drawn in ``radius`` voxels, ``density``
    σ at the centre) at random places: ice crystals and contamination on the lamella."""
    rng = np.random.default_rng(seed)
    out = volume.astype(np.float32).copy()
    s = _std(volume)
    zz, yy, xx = np.ogrid[:volume.shape[0], :volume.shape[1], :volume.shape[2]]
    for _ in range(n_blobs):
        c = rng.uniform(0, 1, 3) * np.array(volume.shape)
        r = rng.uniform(*radius)
        d2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        out -= (density * s * np.exp(-d2 / (2 * (r / 1.5) ** 2))).astype(np.float32)
    return out


def empty_ice(volume, table, planes, seed=0):
    """``planes`` planes of particle-free ice added above and below the specimen (z), and
    the table shifted to match: the reconstruction thicker than the specimen, as most real
    ones are. The empty planes are the tomogram's own planes with their phases randomised
    in xy: the same power spectrum (noise, texture) with nothing in it to pick."""
    rng = np.random.default_rng(seed)
    nz = volume.shape[0]

    def blank(k):
        src = volume[rng.integers(0, nz, k)]
        f = np.fft.rfft2(src)
        phase = np.exp(2j * np.pi * rng.uniform(0, 1, f.shape))
        return np.fft.irfft2(np.abs(f) * phase, s=src.shape[1:]).astype(np.float32) + src.mean(axis=(1, 2),
                                                                                                keepdims=True)
    out = np.concatenate([blank(planes), volume.astype(np.float32), blank(planes)])
    shifted = CoordTable(table.xyz + [0.0, 0.0, float(planes)], table.classes, table.scores, table.extra)
    return out, shifted


def inverted(volume):
    """Contrast flipped: particles bright, as some reconstructions deliver them."""
    return (-np.asarray(volume, np.float32)).astype(np.float32)


def resampled(volume, table, voxel_size, new_voxel_size):
    """The tomogram at ``new_voxel_size`` Å/voxel (Fourier cropping or padding) and the table
    in its voxels (the same places: x' = x / scale per axis)."""
    from ..volume import resample, resample_scales
    out = resample(volume, voxel_size, new_voxel_size)
    scales = resample_scales(np.shape(volume), voxel_size, new_voxel_size)
    return out, CoordTable(table.xyz / scales, table.classes, table.scores, table.extra)
