"""Fourier shell correlation of two volumes (Gum-Net §S3.5.2, Eq. 4), the figure-of-merit
weighting of an average by its half maps' FSC (Rosenthal & Henderson 2003) and the
resolution where a curve falls below a threshold."""
import numpy as np


def _fourier_shells(n):
    """Each voxel's Fourier shell (its rounded radius) in an unshifted n³ FFT."""
    f = np.fft.fftfreq(n) * n
    return np.rint(np.sqrt(sum(g ** 2 for g in np.meshgrid(f, f, f, indexing="ij")))).astype(int)


def fsc(a, b):
    """Fourier shell correlation of two volumes, one value per shell 0 .. box/2 - 1."""
    n = a.shape[0]
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    r = _fourier_shells(n)
    shells = n // 2
    num = np.bincount(r.ravel(), (fa * np.conj(fb)).real.ravel(), minlength=shells + 1)[:shells]
    da = np.bincount(r.ravel(), (np.abs(fa) ** 2).ravel(), minlength=shells + 1)[:shells]
    db = np.bincount(r.ravel(), (np.abs(fb) ** 2).ravel(), minlength=shells + 1)[:shells]
    return num / np.sqrt(np.maximum(da * db, 1e-30))


def fsc_weighted(volume, curve):
    """``volume`` filtered by the figure of merit of its FSC (Rosenthal & Henderson 2003,
    Eq. 18): shell k times sqrt(2 FSC / (1 + FSC)), the FSC of two half maps turned into that
    of the full average against the truth; shells the halves do not agree on (FSC <= 0) and
    those beyond Nyquist are removed. What makes the average readable: its noise is kept out
    where the halves say there is no signal."""
    r = _fourier_shells(volume.shape[0])
    c = np.clip(np.asarray(curve, np.float64), 0.0, 1.0)
    weight = np.zeros(r.max() + 1)
    weight[:len(c)] = np.sqrt(2 * c / (1 + c))
    weight[0] = 1.0                                  # the mean stays
    return np.real(np.fft.ifftn(np.fft.fftn(volume) * weight[r])).astype(np.float32)


def resolution(curve, box, voxel_size, threshold):
    """Resolution in Å where ``curve`` first falls below ``threshold`` (shell k stands for
    box * voxel_size / k Å); the Nyquist limit when it never does."""
    below = np.where(np.asarray(curve)[1:] < threshold)[0]
    shell = (below[0] + 1) if len(below) else len(curve)
    # interpolate between the last shell above and the first below
    if len(below) and shell > 1:
        c0, c1 = curve[shell - 1], curve[shell]
        shell = shell - 1 + (c0 - threshold) / max(c0 - c1, 1e-12)
    return float(box * voxel_size / max(shell, 1e-6))
