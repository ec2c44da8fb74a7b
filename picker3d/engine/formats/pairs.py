"""Tomograms with their coordinate tables, read in pairs and checked against each other."""
from ..errors import InputError
from .mrc import read_volume
from .readers import read_table


def iter_pairs(tomograms, coords, fmt=None, what=""):
    """(tomogram, coordinate file, volume, voxel size, table) per pair, read one pair at a
    time, the table checked against its volume. ``what``: the flags' prefix in messages
    ('val-' for --val-coords)."""
    if len(tomograms) != len(coords):
        raise InputError(f"--{what}coords: {len(coords)} coordinate files for {len(tomograms)} tomograms")
    for t, c in zip(tomograms, coords):
        v, s = read_volume(t)
        tab = read_table(c, fmt)
        tab.check_inside(v.shape, c)
        yield t, c, v, s, tab


def read_pairs(tomograms, coords, fmt=None, what=""):
    """(volumes, tables, voxel sizes) of every pair (:func:`iter_pairs`).

    Example: ``vols, tables, sizes = read_pairs(["t1.mrc"], ["t1.tsv"])``"""
    vols, tables, sizes = [], [], []
    for _, _, v, s, tab in iter_pairs(tomograms, coords, fmt, what):
        vols.append(v)
        tables.append(tab)
        sizes.append(s)
    return vols, tables, sizes
