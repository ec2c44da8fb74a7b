"""Imaging a scene (Gum-Net §S3): tilt-series projection, CTF, noise at a particle-referenced SNR, weighted back-projection (torch, CPU or GPU)."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from .species import ATOM_DENSITY


def electron_wavelength(kv):
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = kv * 1e3
    return 12.2643 / math.sqrt(v * (1 + 0.978466e-6 * v))


def ctf_2d(shape, voxel_size, defocus_um, kv=300.0, cs_mm=2.7, amp_contrast=0.07, bfactor=200.0):
    """Phase-contrast CTF (under-focus positive) with a B-factor envelope, on an rfft2 grid."""
    lam = electron_wavelength(kv)
    ky = np.fft.fftfreq(shape[0], d=voxel_size)
    kx = np.fft.rfftfreq(shape[1], d=voxel_size)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    dz = defocus_um * 1e4
    cs = cs_mm * 1e7
    chi = math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam ** 3 * k2 ** 2
    w = math.sqrt(1 - amp_contrast ** 2)
    return -(w * np.sin(chi) + amp_contrast * np.cos(chi)) * np.exp(-bfactor * k2 / 4.0)


def project(volume, angle_deg):
    """Line integrals of ``volume[z, y, x]`` for a tilt about y: returns ``(Y, X)``."""
    Z, Y, X = volume.shape
    th = math.radians(angle_deg)
    c, s = math.cos(th), math.sin(th)
    T = int(math.ceil(Z / max(abs(c), 1e-3))) + 2
    uc = torch.arange(X, dtype=volume.dtype, device=volume.device) - (X - 1) / 2
    tc = torch.arange(T, dtype=volume.dtype, device=volume.device) - (T - 1) / 2
    xs = uc[None, :] * c - tc[:, None] * s            # (T, U)
    zs = uc[None, :] * s + tc[:, None] * c
    grid = torch.stack((xs / ((X - 1) / 2), zs / ((Z - 1) / 2)), dim=-1)[None]
    vol = volume.permute(1, 0, 2)[None]               # (1, C=Y, H=Z, W=X)
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].sum(dim=1)                          # (Y, U)


def ramp_filter(projection):
    """Ram-Lak filter along the detector axis (built in real space to keep the DC right)."""
    U = projection.shape[-1]
    n = 2 * U
    k = torch.arange(n, device=projection.device)
    k = torch.where(k <= n // 2, k, n - k).to(projection.dtype)
    h = torch.zeros(n, dtype=projection.dtype, device=projection.device)
    h[0] = 0.25
    odd = (k % 2) == 1
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    filt = torch.fft.rfft(h).real
    spec = torch.fft.rfft(projection, n=n, dim=-1) * filt
    return torch.fft.irfft(spec, n=n, dim=-1)[..., :U]


def backproject(filtered, angles_deg, shape):
    """Weighted back-projection of filtered projections ``(A, Y, U)`` into ``(Z, Y, X)``."""
    Z, Y, X = shape
    dev, dt = filtered.device, filtered.dtype
    xc = torch.arange(X, dtype=dt, device=dev) - (X - 1) / 2
    zc = torch.arange(Z, dtype=dt, device=dev) - (Z - 1) / 2
    recon = torch.zeros((Y, Z, X), dtype=dt, device=dev)
    U = filtered.shape[-1]
    for proj, a in zip(filtered, angles_deg):
        th = math.radians(a)
        u = xc[None, :] * math.cos(th) + zc[:, None] * math.sin(th) + (U - 1) / 2  # (Z, X)
        i0 = torch.floor(u)
        w = (u - i0)[None]
        i0 = i0.long()
        padded = F.pad(proj, (1, 2))                 # zero beyond the detector
        j0 = (i0 + 1).clamp(0, U + 2).flatten()
        j1 = (i0 + 2).clamp(0, U + 2).flatten()
        v0 = padded[:, j0].reshape(Y, Z, X)
        v1 = padded[:, j1].reshape(Y, Z, X)
        recon += v0 * (1 - w) + v1 * w
    recon *= math.pi / (2 * len(angles_deg))
    return recon.permute(1, 0, 2).contiguous()


def tilt_angles(tilt_range=60.0, tilt_step=3.0):
    n = int(round(2 * tilt_range / tilt_step)) + 1
    return np.linspace(-tilt_range, tilt_range, n)


def particle_signal_variance(particle_density, voxel_size, angles, defocus_um, bfactor=200.0,
                             device="cpu"):
    """Variance of the CTF-modulated projections of the labelled particles, inside their
    footprints (pixels crossing at least one voxel of protein), averaged over the tilts.

    This is the signal of a particle box as Gum-Net defines a sub-tomogram's SNR (Gum-Net
    §S3.5.1): it does not grow with gold, membranes or crowders and hardly depends on how
    many particles a field holds, so a given SNR means the same particle visibility in
    every scene. 0 when there are no particles.
    """
    vol = torch.as_tensor(np.ascontiguousarray(particle_density), dtype=torch.float32, device=device)
    _, Y, X = vol.shape
    ctf = torch.as_tensor(ctf_2d((Y, X), voxel_size, defocus_um, bfactor=bfactor),
                          dtype=torch.float32, device=device)
    variances = []
    for a in angles:
        p = project(vol, a)
        footprint = p > ATOM_DENSITY
        if int(footprint.sum()) < 2:
            continue
        img = torch.fft.irfft2(torch.fft.rfft2(p) * ctf, s=(Y, X))
        variances.append(float(img[footprint].var()))
    return float(np.mean(variances)) if variances else 0.0


def image_volume(density, voxel_size, rng, snr=0.05, tilt_range=60.0, tilt_step=3.0,
                 defocus_um=None, bfactor=200.0, device="cpu", batch_boxes=None,
                 particle_density=None):
    """Tilt series with CTF and noise, then weighted back-projection.

    ``density`` is positive potential ``[z, y, x]``. With ``batch_boxes=b``, the y axis
    holds independent boxes of height ``b`` (sub-tomogram mode): the CTF is applied to
    each box separately so that boxes do not leak into each other, and each projection's
    noise follows the mean variance of its boxes.
    With ``particle_density`` (tomogram mode), the noise is the same for every tilt (a
    constant dose) and its variance is the labelled particles' signal variance
    (``particle_signal_variance``) divided by ``snr``. Without it (or when it holds no
    particle), each projection's noise follows that projection's whole-field variance.
    Returns the reconstruction, normalised to zero mean and unit variance.
    ``snr=None`` or ``inf`` gives a noise-free reconstruction.
    """
    vol = torch.as_tensor(np.ascontiguousarray(density), dtype=torch.float32, device=device)
    Z, Y, X = vol.shape
    angles = tilt_angles(tilt_range, tilt_step)
    if defocus_um is None:
        defocus_um = rng.uniform(2.0, 5.0)
    noisy = snr is not None and np.isfinite(snr)
    fixed_sigma = None
    if noisy and particle_density is not None:
        ref = particle_signal_variance(particle_density, voxel_size, angles, defocus_um,
                                       bfactor=bfactor, device=device)
        # a scene without labelled particles has no signal to refer to: the whole-field
        # rule below applies to it
        if ref > 0:
            fixed_sigma = math.sqrt(ref / snr)
    filtered = []
    box = batch_boxes or Y
    for a in angles:
        p = project(vol, a)                                   # (Y, U)
        df = defocus_um + rng.normal(0, 0.05)
        ctf = torch.as_tensor(ctf_2d((box, X), voxel_size, df, bfactor=bfactor),
                              dtype=torch.float32, device=device)
        pb = p.reshape(Y // box, box, X)
        img = torch.fft.irfft2(torch.fft.rfft2(pb) * ctf, s=(box, X)).reshape(Y, X)
        if noisy:
            if fixed_sigma is not None:
                sigma = fixed_sigma
            elif batch_boxes:
                sigma = float(torch.sqrt(img.reshape(Y // box, -1).var(dim=1).mean() / snr))
            else:
                sigma = float(torch.sqrt(img.var() / snr))
            noise = torch.as_tensor(rng.normal(0, sigma, size=(Y, X)), dtype=torch.float32, device=device)
            img = img + noise
        filtered.append(ramp_filter(img))
    recon = backproject(torch.stack(filtered), angles, (Z, Y, X))
    recon = recon - recon.mean()
    recon = recon / (recon.std() + 1e-12)
    return recon.cpu().numpy().astype(np.float32)
