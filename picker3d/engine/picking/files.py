"""Picking files: MRC tomograms (or a copick project's runs) read for a model file, picked,
and their picks written as tables (and RELION, Dynamo or copick files, and score maps).

Example::

    from picker3d.engine.options import PickOptions
    from picker3d.engine.picking.files import pick_files
    pick_files("model.pt", ["tomo_02.mrc"], "picks", PickOptions(z_range="all"))
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import InputError
from ..formats.mrc import read_binned, read_shape, read_volume, read_voxel_size, write_volume
from ..formats.writers import format_suffix, write_format, write_table
from ..options import PickOptions, z_range
from ..sampling import differs, picking_voxel_size
from ..volume import bin_volume, resample, resample_scales
from .tiles import upsample
from .tomogram import keep_in_mask, pick_tomogram


def load_models(model_path, devices, warn=print):
    """One model per device and the model file's metadata."""
    from ..modelfile import load_model
    models = []
    for i, dev in enumerate(devices):
        # (no voxel size: a tomogram at another sampling is resampled to the model's, network_volume)
        model, meta = load_model(model_path, dev, voxel_size=None, warn=warn if i == 0 else (lambda m: None))
        models.append(model)
    return models, meta


def kept_classes(classes, meta, model_path):
    """--classes as a list (None: all), checked against the model's classes."""
    if not classes:
        return None
    keep = [c.strip() for c in classes.split(",") if c.strip()]
    unknown = [c for c in keep if c not in meta["classes"]]
    if unknown:
        raise InputError(f"--classes: the model {model_path} was not trained on {', '.join(unknown)} "
                         f"(its classes: {', '.join(meta['classes'])})")
    return keep


def pick_files(model_path, tomograms, out_dir, options=None, masks=None, devices=("cpu",), log=print, warn=None):
    """Pick each MRC tomogram with the model file and write ``out_dir/<stem>.tsv`` (and the
    ``options.format`` file and score map). ``masks``: one MRC per tomogram, picks kept where
    it is non-zero. Several ``devices``: one model each, the tomograms dealt out in turn."""
    options = options or PickOptions()
    if masks and len(masks) != len(tomograms):
        raise InputError(f"--mask: {len(masks)} masks for {len(tomograms)} tomograms (--tomograms)")
    models, meta = load_models(model_path, devices, warn=warn or log)
    keep = kept_classes(options.classes, meta, model_path)
    if len(devices) == 1:
        return [pick_file(path, models[0], meta, out_dir, options, devices[0], keep, masks and masks[i], log=log)
                for i, path in enumerate(tomograms)]
    if len(set(devices)) < len(devices) and devices[0] == "cpu":
        import torch
        torch.set_num_threads(max(1, torch.get_num_threads() // len(devices)))    # share the cores
    jobs = [[j for j in range(len(tomograms)) if j % len(devices) == k] for k in range(len(devices))]

    def work(k):
        return [pick_file(tomograms[j], models[k], meta, out_dir, options, devices[k], keep, masks and masks[j],
                          quiet=True, log=log) for j in jobs[k]]

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        # an error in any worker ends the command with its one line
        return [t for f in [pool.submit(work, k) for k in range(len(devices))] for t in f.result()]


def read_mask(mask_path, tomogram, shape):
    """A region mask of the tomogram's shape."""
    mask, _ = read_volume(mask_path)
    if mask.shape != tuple(shape):
        raise InputError(f"--mask: {mask_path} is {'x'.join(map(str, mask.shape))} voxels (z y x), the "
                         f"tomogram {tomogram} {'x'.join(map(str, shape))}")
    return mask


def pick_file(path, model, meta, out_dir, options, device, keep=None, mask_path=None, quiet=False, log=print):
    """Pick one MRC tomogram and write ``out_dir/<stem>.tsv`` (and the other outputs)."""
    vs = picking_voxel_size(path, read_voxel_size(path), options.voxel_size, meta, log)
    shape = read_shape(path)
    specimen = z_range(options.z_range, shape[0], path)          # checked before the work
    mask = read_mask(mask_path, path, shape) if mask_path else None
    vol, full_shape, scale = network_volume(path, meta, vs, log=log)
    stem = os.path.splitext(os.path.basename(path))[0]
    return pick_volume(stem, vol, vs, full_shape, model, meta, out_dir, options, device, keep, quiet, source=path,
                       scale=scale, specimen=specimen, mask=mask, log=log)


def pick_copick_runs(model_path, config, runs, out_dir, options=None, voxel_spacing=10.0, tomo_type="wbp",
                     user="picker3d", session="0", device="cpu", log=print):
    """Pick runs of a copick project: ``out_dir/<run>.tsv``, and the picks back into the
    project as ``user`` / ``session`` (an object the configuration lacks is added with the
    model's radius)."""
    from ..formats.copick_project import open_project, read_tomogram, select_runs, write_picks
    options = options or PickOptions()
    (model,), meta = load_models(model_path, [device], warn=log)
    keep = kept_classes(options.classes, meta, model_path)
    root = open_project(config)
    radii = {c: d / 2.0 * voxel_spacing for c, d in (meta.get("diameters") or {}).items()}
    for run in select_runs(root, runs, config):
        full, vs = read_tomogram(run, voxel_spacing, tomo_type)
        vol, shape, scale = network_volume(f"run {run.name}", meta, vs, full=full, log=log)
        table = pick_volume(run.name, vol, vs, shape, model, meta, out_dir, options, device, keep, scale=scale,
                            specimen=z_range(options.z_range, shape[0], f"run {run.name}"), log=log)
        added = write_picks(root, config, run, table, voxel_spacing, user, session, radii)
        log(f"{config}: run {run.name}: {len(table)} picks written as user {user}, session {session}"
            + (f"; objects added to the configuration: {', '.join(added)}" if added else ""))


def network_volume(path, meta, vs, full=None, log=print):
    """``(binned volume, full shape, scale)`` of a tomogram for the model: read and binned a
    few planes at a time (the full-size tomogram never in memory), or, more than 2 % off the
    model's voxel size, resampled to it first (``scale`` = model / tomogram voxel size: a
    position in the resampled voxels times it is one in the tomogram's). ``full``: the
    tomogram already in memory."""
    factor = int(meta.get("bin", 1))
    model_vs = meta.get("voxel_size")
    if differs(vs, model_vs):
        if full is None:
            full, _ = read_volume(path)
        log(f"{path}: {vs:g} Å/voxel, the model {model_vs:g}: resampled to the model's voxel size, picks mapped "
            f"back to the tomogram's voxels")
        return bin_volume(resample(full, vs, model_vs), factor), full.shape, resample_scales(full.shape, vs, model_vs)
    if full is not None:
        return bin_volume(full, factor), full.shape, 1.0
    vol, _, full_shape = read_binned(path, factor)
    return vol, full_shape, 1.0


def score_map(probs, meta, full_shape, scale):
    """1 - background probability at the tomogram's voxels (upsampled from the network's, and
    resampled back when the tomogram was resampled to the model's voxel size)."""
    factor = int(meta.get("bin", 1))
    if np.all(np.asarray(scale) == 1.0):
        return upsample(1.0 - probs[0], factor, full_shape)
    own = [int(n * factor) for n in probs.shape[1:]]
    score = resample(upsample(1.0 - probs[0], factor, own), 1.0, 1.0 / float(np.mean(scale)))
    out = np.zeros(full_shape, np.float32)
    z, y, x = (min(a, b) for a, b in zip(full_shape, score.shape))
    out[:z, :y, :x] = score[:z, :y, :x]
    return out


def pick_volume(stem, vol, vs, full_shape, model, meta, out_dir, options, device, keep=None, quiet=False,
                source=None, scale=1.0, specimen="auto", mask=None, log=print):
    """Pick one (binned) tomogram and write ``out_dir/<stem>.tsv``, the ``options.format``
    file and the score map; returns the picks. ``scale`` (per axis x, y, z, or one number):
    positions in the voxels of the volume ``vol`` was binned from times it are the
    tomogram's (resampled to the model's voxel size)."""
    t0 = time.time()
    if options.invert:
        vol = -vol
    scale = np.broadcast_to(np.asarray(scale, dtype=float), (3,))      # per axis x, y, z
    resampled = bool(np.any(scale != 1.0))
    if isinstance(specimen, tuple):
        specimen = (specimen[0] / scale[2], specimen[1] / scale[2])
    try:
        table, probs = pick_tomogram(model, meta, vol, device=device, threshold=options.threshold,
                                     tile=options.tile, pad=options.pad, mode=options.mode, progress=not quiet,
                                     log=None if quiet else log, flips=options.flips, border=options.border,
                                     prebinned=True, precision=options.precision, specimen=specimen,
                                     check_polarity=options.polarity_check)
    except InputError as exc:
        raise InputError(f"{source or stem}: {exc}") from None
    if resampled:
        table.xyz = table.xyz * scale
    table = keep_in_mask(table, mask)       # in the tomogram's voxels, after any resampling
    if keep is not None:
        table = table.subset([i for i, c in enumerate(table.classes) if c in keep])
    os.makedirs(out_dir, exist_ok=True)     # only once there is something to write
    write_table(os.path.join(out_dir, stem + ".tsv"), table)
    if options.format != "tsv":
        write_format(os.path.join(out_dir, stem + format_suffix(options.format)), table, options.format, stem,
                     full_shape, vs)
    if options.score_map:
        write_volume(os.path.join(out_dir, stem + "_score.mrc"),
                     score_map(probs, meta, full_shape, scale if resampled else 1.0), vs)
    counts = ", ".join(f"{c} {int((table.classes == c).sum())}" for c in (keep or meta["classes"]))
    log(f"{source or stem}: {len(table)} particles ({counts}) in {time.time() - t0:.1f} s [{device}]")
    return table
