"""Simulated tomograms and sub-tomogram stacks with their ground truth, and the files the command line writes."""
import json
import os
import time

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..fileio import atomic_write
from ..formats.mrc import write_volume
from ..formats.table import CoordTable
from ..formats.writers import write_table
from .imaging import image_volume
from .scene import _splat, render_scene
from .species import ATOM_SIGMA, DEFAULT_COUNTS, SPECIES_BUILDERS, build_species


def simulate_tomogram(shape=(96, 256, 256), seed=0, snr=0.05, species=None, voxel_size=10.0,
                      tilt_range=60.0, tilt_step=3.0, counts=None, crowders=None, vesicles=1,
                      membranes=1, gold=4, density_scale=1.0, device="cpu"):
    """Simulate one tomogram; returns a dict with tomogram, density, rows, occupancy, manifest."""
    t0 = time.time()
    rng = np.random.default_rng(seed)
    names = list(species or SPECIES_BUILDERS)
    sp = [build_species(n, voxel_size) for n in names]
    vol_scale = np.prod(shape) / (96 * 256 * 256) * density_scale
    if counts is None:
        counts = {n: max(1, int(round(DEFAULT_COUNTS.get(n, 15) * vol_scale))) for n in names}
    if crowders is None:
        crowders = int(round(50 * vol_scale))
    density, rows, occupancy, particles = render_scene(
        shape, sp, counts, rng, crowders=crowders, vesicles=vesicles, membranes=membranes,
        gold=gold, with_particle_density=True)
    tomo = image_volume(density, voxel_size, rng, snr=snr, tilt_range=tilt_range,
                        tilt_step=tilt_step, device=device, particle_density=particles)
    manifest = {
        "seed": seed, "shape_zyx": list(shape), "voxel_size_A": voxel_size, "snr": snr,
        "tilt_range_deg": tilt_range, "tilt_step_deg": tilt_step,
        "species": {s.name: {"diameter_vox": s.diameter,
                             "count": sum(r["class"] == s.name for r in rows)} for s in sp},
        "distractors": {"crowders": crowders, "vesicles": vesicles, "membranes": membranes, "gold": gold},
        "seconds": round(time.time() - t0, 2),
    }
    return {"tomogram": tomo, "density": density, "rows": rows, "occupancy": occupancy,
            "manifest": manifest}


def simulate_subtomograms(n_per_species=50, box=32, seed=0, snr=0.03, species=None,
                          voxel_size=10.0, tilt_range=60.0, tilt_step=3.0, max_shift=2.0,
                          device="cpu", chunk=64):
    """Labelled sub-tomograms (one particle per box, random orientation and small shift).

    Returns ``(stack[n, box, box, box], rows)``. The boxes are imaged in chunks stacked
    along y (the tilt axis), which keeps them independent and costs one tilt series
    per chunk.
    """
    rng = np.random.default_rng(seed)
    names = list(species or SPECIES_BUILDERS)
    sp = {n: build_species(n, voxel_size) for n in names}
    labels = [n for n in names for _ in range(n_per_species)]
    order = rng.permutation(len(labels))
    labels = [labels[i] for i in order]
    rows, boxes = [], []
    ctr = (box - 1) / 2
    for start in range(0, len(labels), chunk):
        part = labels[start:start + chunk]
        pts_all, w_all = [], []
        for j, name in enumerate(part):
            rot = Rotation.random(random_state=rng)
            shift = rng.uniform(-max_shift, max_shift, size=3)
            pts = rot.apply(sp[name].atoms)[:, ::-1] + ctr + shift[::-1]
            pts[:, 1] += j * box
            pts_all.append(pts)
            w_all.append(np.ones(len(pts)))
            rows.append({"index": len(rows), "class": name,
                         **dict(zip(("rot", "tilt", "psi"), rot.as_euler("ZYZ", degrees=True))),
                         "dx": shift[0], "dy": shift[1], "dz": shift[2]})
        shape = (box, box * len(part), box)
        dens = ndimage.gaussian_filter(_splat(shape, np.concatenate(pts_all), np.concatenate(w_all)),
                                       ATOM_SIGMA).astype(np.float32)
        rec = image_volume(dens, voxel_size, rng, snr=snr, tilt_range=tilt_range,
                           tilt_step=tilt_step, device=device, batch_boxes=box)
        rec = rec.reshape(box, len(part), box, box).transpose(1, 0, 2, 3)
        boxes.append(rec)
    stack = np.concatenate(boxes)
    # per-box normalisation, as extraction would do
    stack = (stack - stack.mean(axis=(1, 2, 3), keepdims=True)) / (
        stack.std(axis=(1, 2, 3), keepdims=True) + 1e-6)
    return stack.astype(np.float32), rows


def write_simulation(out_dir, n_tomograms=1, seed=0, artefacts=None, **kw):
    """Write ``tomo_XX.mrc`` + ``tomo_XX.tsv`` (+ occupancy, density) and ``manifest.json``.

    Tomogram ``i`` uses seed ``seed + i``. ``artefacts``: what a real tomogram brings, added to
    each reconstructed tomogram (:func:`add_artefacts`). Returns the manifest dict.
    """
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"tomograms": []}
    for i in range(n_tomograms):
        stem = f"tomo_{i:02d}"
        sim = simulate_tomogram(seed=seed + i, **kw)
        if artefacts:
            sim = add_artefacts(sim, seed=seed + i, **artefacts)
        vs = sim["manifest"]["voxel_size_A"]
        write_volume(os.path.join(out_dir, stem + ".mrc"), sim["tomogram"], vs)
        write_volume(os.path.join(out_dir, stem + "_occupancy.mrc"), sim["occupancy"], vs)
        write_volume(os.path.join(out_dir, stem + "_density.mrc"), sim["density"], vs)
        write_table(os.path.join(out_dir, stem + ".tsv"), CoordTable.from_rows(sim["rows"]))
        entry = dict(sim["manifest"], name=stem, tomogram=stem + ".mrc", coords=stem + ".tsv",
                     occupancy=stem + "_occupancy.mrc", density=stem + "_density.mrc")
        manifest["tomograms"].append(entry)
    first = manifest["tomograms"][0]
    manifest["diameters"] = {k: v["diameter_vox"] for k, v in first["species"].items()}
    manifest["voxel_size_A"] = first["voxel_size_A"]
    with atomic_write(os.path.join(out_dir, "manifest.json")) as tmp, open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
    return manifest


def add_artefacts(sim, gradient=0.0, carbon_edge=0.0, ice_blobs=0, empty_ice=0, invert=False, seed=0):
    """A simulated tomogram (:func:`simulate_tomogram`'s dict) with a real tomogram's
    artefacts (:mod:`.artefacts`): a thickness gradient of ±``gradient`` σ across x, a carbon
    edge over the fraction ``carbon_edge`` of y, ``ice_blobs`` ice contamination blobs,
    ``empty_ice`` planes of empty ice above and below (the ground truth, occupancy and density
    shifted to match), the contrast flipped. The manifest records them."""
    from . import artefacts as art
    vol = sim["tomogram"]
    rows = [dict(r) for r in sim["rows"]]
    occupancy, density = sim["occupancy"], sim["density"]
    if gradient:
        vol = art.thickness_gradient(vol, gradient)
    if carbon_edge:
        vol = art.carbon_edge(vol, carbon_edge, seed=seed)
    if ice_blobs:
        vol = art.ice_contamination(vol, ice_blobs, seed=seed)
    if empty_ice:
        table = CoordTable.from_rows(rows)
        vol, _ = art.empty_ice(vol, table, empty_ice, seed=seed)
        for r in rows:
            r["z"] += empty_ice
        pad = ((empty_ice, empty_ice), (0, 0), (0, 0))
        occupancy, density = np.pad(occupancy, pad), np.pad(density, pad)
    if invert:
        vol = art.inverted(vol)
    manifest = dict(sim["manifest"], artefacts={"gradient": gradient, "carbon_edge": carbon_edge,
                                                "ice_blobs": ice_blobs, "empty_ice": empty_ice, "invert": invert})
    return dict(sim, tomogram=vol, rows=rows, occupancy=occupancy, density=density, manifest=manifest)


def write_subtomograms(out_dir, n_per_species=50, box=32, seed=0, snr=0.03, species=None, voxel_size=10.0,
                       tilt_range=60.0, tilt_step=3.0):
    """``out_dir/subtomograms.mrc`` (a stack of :func:`simulate_subtomograms` boxes) and
    ``subtomograms.tsv`` (each box's centre, class and orientation); returns the number of
    boxes."""
    stack, rows = simulate_subtomograms(n_per_species, box, seed, snr, species, voxel_size, tilt_range, tilt_step)
    os.makedirs(out_dir, exist_ok=True)
    write_volume(os.path.join(out_dir, "subtomograms.mrc"), stack, voxel_size)
    table = CoordTable(np.zeros((len(rows), 3)) + (box - 1) / 2, [r["class"] for r in rows],
                       extra={k: [r[k] for r in rows] for k in ("rot", "tilt", "psi", "dx", "dy", "dz")})
    write_table(os.path.join(out_dir, "subtomograms.tsv"), table)
    return len(rows)
