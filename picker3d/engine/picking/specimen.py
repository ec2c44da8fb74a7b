"""What the tomogram itself says about where the specimen is and which way its contrast
goes (numpy and scipy only).

Both read the tomogram band-passed at the particles' scale (a difference of Gaussians at a
sixth and half of a diameter): slow background (ice thickness, carbon) and voxel noise drop
out, what is left is particle-sized density.

* **Polarity.** Dense material is a minority of the voxels, so the band-passed values have a
  long tail on the side of its contrast: negative skewness when protein is dark (as in
  reconstructed cryo-ET data), positive when it is bright. A model records the skewness of
  its training tomograms; a tomogram of opposite sign is flipped relative to them.
* **The specimen slab.** Reconstructions are often two to four times thicker than the lamella
  or ice layer. The band-passed power per z plane is high where there is density and low in
  empty ice (noise only): the slab runs from the first to the last plane clearly above the
  emptiest, widened by a particle; where no plane is clearly emptier, the whole depth.
"""
import numpy as np
from scipy import ndimage
from scipy.stats import skew


def band_pass(volume, diameter):
    """Difference of Gaussians at ``diameter / 6`` and ``diameter / 2`` voxels."""
    v = np.asarray(volume, dtype=np.float32)
    d = max(float(diameter), 3.0)
    return ndimage.gaussian_filter(v, d / 6.0) - ndimage.gaussian_filter(v, d / 2.0)


def polarity_skew(volume, diameter, max_voxels=1 << 21, band=None):
    """Skewness of the band-passed tomogram (negative: dense material dark), a diameter's
    width of the faces left out (the filters' edges respond to any slope there). ``band``:
    :func:`band_pass` of ``volume`` at ``diameter``, when already computed."""
    m = int(np.ceil(diameter))
    bp = band_pass(volume, diameter) if band is None else band
    if min(bp.shape) > 4 * m:
        bp = bp[m:-m, m:-m, m:-m]
    bp = bp.reshape(-1)
    sample = bp[::max(1, bp.size // max_voxels)]
    lo, hi = np.quantile(sample, [1e-4, 1 - 1e-4])      # a few hot voxels do not decide it
    return float(skew(np.clip(sample, lo, hi)))


def polarity_mismatch(tomogram_skew, model_skew, ratio=0.25, floor=0.05):
    """Whether a tomogram's skewness says its contrast is the opposite of the model's training
    tomograms: opposite signs, the model's clearly non-zero, the tomogram's at least
    ``ratio`` of it in size."""
    if model_skew is None or abs(model_skew) < floor:
        return False
    return np.sign(tomogram_skew) == -np.sign(model_skew) and abs(tomogram_skew) >= ratio * abs(model_skew)


def specimen_slab(volume, diameter, margin, contrast=2.0, level=0.25, band=None):
    """``(z0, z1)``: the planes holding the specimen (z1 exclusive), band-passed at
    ``diameter`` and widened by ``margin`` voxels (half the largest particle's diameter) on
    each side. The whole depth when the band-passed power of the fullest planes is less than
    ``contrast`` times that of the emptiest (the specimen fills the volume: nothing is
    empty); else from the first to the last plane above ``level`` of the way from the
    emptiest to the fullest. ``band``: :func:`band_pass` of ``volume``, when already computed."""
    nz = volume.shape[0]
    bp = band_pass(volume, diameter) if band is None else band
    power = ndimage.gaussian_filter1d((bp * bp).mean(axis=(1, 2)).astype(np.float64), max(diameter / 4.0, 1.0))
    empty, full = np.percentile(power, 5), np.percentile(power, 95)
    if not empty > 0 or full < contrast * empty:
        return 0, nz
    z = np.flatnonzero(power > empty + level * (full - empty))
    margin = int(np.ceil(margin))
    return max(0, int(z[0]) - margin), min(nz, int(z[-1]) + 1 + margin)
