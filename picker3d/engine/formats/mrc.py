"""MRC volume reading/writing with validation and atomic writes.

Volumes are numpy arrays indexed ``data[z, y, x]``; the voxel size is in Å.
Writes go to a temporary file in the destination folder and are renamed
into place, so a crash or a full disk never leaves a half-written volume.
"""
import os

import mrcfile
import numpy as np

from ..errors import InputError
from ..fileio import atomic_write
from ..volume import bin_volume


def _existing_file(path):
    """``path`` as a string, or InputError when it is missing or a folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not an MRC file")
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    return path


def _unreadable(path, exc):
    return InputError(f"{path}: not a readable MRC file ({exc.__class__.__name__}: {exc})")


def read_volume(path, dtype=np.float32, allow_non_finite=False):
    """Return ``(data, voxel_size_A)`` for a 3D MRC file, validated.

    Raises InputError naming the file for: missing/unreadable file, non-MRC
    content, 2D images, NaN/Inf values.
    """
    path = _existing_file(path)
    try:
        with mrcfile.open(path, permissive=True, mode="r") as mrc:
            if mrc.data is None:
                raise InputError(f"{path}: not a readable MRC file (no data block)")
            data = np.asarray(mrc.data, dtype=dtype)
            voxel = float(mrc.voxel_size.x)
    except InputError:
        raise
    except Exception as exc:  # mrcfile raises ValueError/OSError on garbage
        raise _unreadable(path, exc) from exc
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputError(f"{path}: expected a 3D volume, found an array of shape {data.shape}")
    if not allow_non_finite and not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(f"{path}: contains {n_bad} NaN/Inf voxels")
    return data, voxel


def read_stack(path):
    """``(stack (n, b, b, b) float32, voxel size)`` of an MRC volume stack (a 4-D file, or a
    3-D file whose z holds n cubes of the side y = x), validated like :func:`read_volume`."""
    path = _existing_file(path)
    try:
        with mrcfile.open(path, permissive=True, mode="r") as mrc:
            if mrc.data is None:
                raise InputError(f"{path}: not a readable MRC file (no data block)")
            data = np.asarray(mrc.data, dtype=np.float32)
            voxel = float(mrc.voxel_size.x)
    except InputError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    if data.ndim == 3 and data.shape[1] == data.shape[2] and data.shape[0] % data.shape[1] == 0:
        data = data.reshape(-1, data.shape[1], data.shape[1], data.shape[1])
    if data.ndim != 4 or not data.shape[1] == data.shape[2] == data.shape[3]:
        raise InputError(f"{path}: expected a stack of cubic boxes (n x b x b x b), found an array of shape "
                         f"{data.shape}")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: contains NaN/Inf voxels")
    return data, voxel


def read_binned(path, factor, chunk_bytes=64 << 20):
    """``(binned volume, voxel size, full shape)`` of a 3D MRC file, read and binned by
    ``factor`` a few planes at a time: the full-size tomogram is never in memory. Validated
    like :func:`read_volume` (3D, finite)."""
    if factor <= 1:
        data, voxel = read_volume(path)
        return data, voxel, data.shape
    path = _existing_file(path)
    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            header = mrc.header
            voxel = float(mrc.voxel_size.x)
            dtype = mrcfile.utils.data_dtype_from_header(header)
            nz, ny, nx = int(header.nz), int(header.ny), int(header.nx)
            offset = 1024 + int(header.nsymbt)
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    if min(nz, ny, nx) < 2:
        raise InputError(f"{path}: expected a 3D volume, found an array of shape {(nz, ny, nx)}")
    plane = ny * nx * dtype.itemsize
    if os.path.getsize(path) < offset + nz * plane:
        raise InputError(f"{path}: truncated MRC file (header says {nz}x{ny}x{nx} voxels)")
    zb = nz // factor
    out = np.empty((zb, ny // factor, nx // factor), dtype=np.float32)
    step = factor * max(1, chunk_bytes // (plane * factor))
    n_bad = 0
    for z0 in range(0, zb * factor, step):
        z1 = min(z0 + step, zb * factor)
        raw = np.fromfile(path, dtype=dtype, count=(z1 - z0) * ny * nx, offset=offset + z0 * plane)
        raw = raw.reshape(z1 - z0, ny, nx).astype(np.float32)
        finite = np.isfinite(raw)
        if not finite.all():
            n_bad += int(raw.size - np.count_nonzero(finite))
            continue
        out[z0 // factor:z1 // factor] = bin_volume(raw, factor)
    if n_bad:
        raise InputError(f"{path}: contains {n_bad} NaN/Inf voxels")
    return out, voxel, (nz, ny, nx)


def usable_voxel_size(voxel_size):
    """Whether a header's voxel size is one: 0 and 1 Å are what writers put when they know none."""
    return bool(voxel_size) and voxel_size > 0 and abs(voxel_size - 1.0) > 1e-6


def read_voxel_size(path):
    """Voxel size in Å from an MRC header, without reading the data."""
    path = _existing_file(path)
    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            return float(mrc.voxel_size.x)
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def read_shape(path):
    """``(nz, ny, nx)`` from an MRC header, without reading the data."""
    path = _existing_file(path)
    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            h = mrc.header
            return int(h.nz), int(h.ny), int(h.nx)
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def write_volume(path, data, voxel_size):
    """Write a 3D volume (or a 4D volume stack) atomically with the voxel size in Å."""
    path = os.fspath(path)
    data = np.asarray(data)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    elif data.dtype in (np.int64, np.int32, np.uint16) and data.size and data.max() < 32768 and data.min() >= -32768:
        data = data.astype(np.int16)
    elif data.dtype == np.bool_:
        data = data.astype(np.int8)
    with atomic_write(path, suffix=".mrc") as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        if data.ndim == 4:
            mrc.header.ispg = 401  # volume stack
        mrc.voxel_size = float(voxel_size)
        mrc.update_header_stats()
    return path
