"""Classifying files: boxes cut from MRC tomograms at a table's coordinates (or a stack of
sub-tomograms, or a copick project's runs), clustered, aligned and averaged; the table with
its classes, the class averages, the run's record, and the boxes for RELION written.

Example::

    from picker3d.engine.options import ClassifyOptions
    from picker3d.engine.classification.files import classify_files
    classify_files(["tomo.mrc"], ["tomo.tsv"], "classes.tsv", ClassifyOptions(box=40))
"""
import json
import os

import numpy as np

from ..errors import InputError
from ..fileio import atomic_text
from ..formats.mrc import read_stack, write_volume
from ..formats.pairs import iter_pairs
from ..formats.readers import read_table
from ..formats.table import CoordTable
from ..formats.writers import write_table
from ..options import ClassifyOptions
from ..options.base import k_range
from .alignment import align_class
from .boxes import class_averages, extract_subvolumes, normalize_box
from .disca import classify_boxes


def classify_files(tomograms, coords, out, options=None, fmt=None, subtomograms=None, copick=None, averages=None,
                   boxes_dir=None, log=print):
    """Classify the picks of ``coords`` in ``tomograms`` (or the boxes of the stack
    ``subtomograms``, or a copick project: ``copick`` = the keywords of
    :func:`picker3d.engine.formats.copick_project.annotated_runs` without ``root``) and write
    ``out`` (the input columns plus cluster, posterior, the alignment), the averages in
    ``averages`` (default: OUT stem + _averages), ``OUT_disca.json``, and with ``boxes_dir``
    every box and a RELION ``particles.star``."""
    o = options or ClassifyOptions()
    stack, tables, vs = _inputs(tomograms, coords, o, fmt, subtomograms, copick, log)
    k_min = min(k_range(o.k_range))
    if len(stack) <= max(2, k_min):
        raise InputError(f"--coords: {len(stack)} picks are too few to cluster into at least {k_min} classes "
                         f"(--k-range)")
    box_files = write_boxes(boxes_dir, stack, vs) if boxes_dir else None
    res = classify_boxes(stack, o, log=log)
    stack, labels = normalize_box(stack), res["labels"]
    table = _joined(tables)
    if box_files is not None:
        table.extra["box_file"] = np.asarray(box_files, dtype=object)
    table.extra.update(cluster=labels + 1, posterior=np.round(res["posterior"], 4),
                       embed_x=np.round(res["embedding"][:, 0], 4), embed_y=np.round(res["embedding"][:, 1], 4))
    avg_dir = averages or os.path.splitext(out)[0] + "_averages"
    resolution = write_class_averages(stack, labels, vs, avg_dir, table, o, log, res["alignment"])
    atomic_text(os.path.splitext(out)[0] + "_disca.json", json.dumps(
        {"k": res["k"], "k_clustering": res["k_clustering"], "iteration": res["iteration"] + 1, "ddbi": res["ddbi"], "history": res["history"],
         "sizes": np.bincount(labels).tolist(), "aligned": bool(o.align), "resolution": resolution,
         "density_splits": [{"class": c + 1, "new_class": n + 1, "sizes": sz, "separation": round(d, 3)}
                            for c, n, sz, d in res.get("splits", [])],
         "clustering_classes": [int(c) + 1 for c in res["origin"]],
         "merges": [{"class": m["into"] + 1, "merged": m["merged"] + 1, "confusion": m["confusion"],
                     "agreement": m["agreement"], "half_agreement": m["half_agreement"]} for m in res["merges"]]},
        indent=1) + "\n")
    write_table(out, table)
    if boxes_dir and o.box % 2:
        log(f"{boxes_dir}: no particles.star: RELION takes even box sizes only (--box {o.box})")
    elif boxes_dir:
        from ..formats.relion_subtomo import write_particles_star
        star = write_particles_star(os.path.join(boxes_dir, "particles.star"), table, o.box, vs,
                                    tilt_range=o.tilt_range)
        log(f"{star}: the boxes with their classes and alignment for RELION (relion_reconstruct --3d_rot)")
    sizes = ", ".join(f"{i + 1}: {n}" for i, n in enumerate(np.bincount(labels)))
    log(f"{out}: {len(labels)} particles in {int(labels.max()) + 1} classes ({sizes}); averages in {avg_dir}")
    return table, res


def _joined(tables):
    """One table of every tomogram's rows (columns all of them have)."""
    return CoordTable(np.concatenate([t.xyz for t in tables]),
                      None if any(t.classes is None for t in tables) else np.concatenate([t.classes for t in tables]),
                      None if any(t.scores is None for t in tables) else np.concatenate([t.scores for t in tables]),
                      {k: np.concatenate([t.extra[k] for t in tables]) for k in tables[0].extra
                       if all(k in t.extra for t in tables)})


def _stack_inputs(path, tomograms, coords):
    if tomograms or coords:
        raise InputError("--subtomograms: give either a stack or --tomograms with --coords, not both")
    stack, vs = read_stack(path)
    table_path = os.path.splitext(path)[0] + ".tsv"
    table = read_table(table_path) if os.path.exists(table_path) else CoordTable(np.zeros((len(stack), 3)))
    if len(table) != len(stack):
        raise InputError(f"{table_path}: {len(table)} rows for {len(stack)} boxes in {path}")
    return np.asarray(stack, dtype=np.float32), [table], vs


def _inputs(tomograms, coords, o, fmt, subtomograms, copick, log):
    """The boxes in the tomograms' units (each tomogram normalised once: the contrast
    features need them; the shape features and the averages normalise each box), their
    tables (with the tomogram's file stem) and the voxel size."""
    if subtomograms:
        return _stack_inputs(subtomograms, tomograms, coords)
    if not tomograms and not copick:
        raise InputError("--tomograms: required (or give --subtomograms or --copick-config)")
    if copick:
        from ..formats.copick_project import annotated_runs, open_project
        pairs = ((name, f"{copick['config']} run {name}", vol, vs, tab) for name, vol, vs, tab in
                 annotated_runs(open_project(copick["config"]), **copick))
    else:
        pairs = iter_pairs(tomograms, coords, fmt, "")
    stacks, tables, vs = [], [], None
    for t, c, vol, size, tab in pairs:
        vs = size       # the last tomogram's (the averages are written at it)
        if o.box > min(vol.shape):
            raise InputError(f"--box: {o.box} voxels is larger than the tomogram {t} "
                             f"({'x'.join(map(str, vol.shape))}, z y x)")
        stack, kept, outside = extract_subvolumes(vol, tab.xyz, o.box, o.out_of_volume, per_box=False)
        if outside:
            what = "left out" if o.out_of_volume == "skip" else "padded by mirroring the tomogram"
            log(f"{c}: {outside} of {len(tab)} boxes reach outside {t}: {what}")
        tab = tab.subset(kept)
        tab.extra["tomogram"] = np.asarray([os.path.splitext(os.path.basename(t))[0]] * len(tab), dtype=object)
        stacks.append(stack)
        tables.append(tab)
    return np.concatenate(stacks), tables, vs


def write_boxes(folder, stack, voxel_size):
    """Each sub-volume of ``stack`` as ``folder/particle_NNNNNN.mrc`` (1-based, table order);
    returns the file names relative to ``folder``."""
    os.makedirs(folder, exist_ok=True)
    names = [f"particle_{i:06d}.mrc" for i in range(1, len(stack) + 1)]
    for name, box in zip(names, stack):
        write_volume(os.path.join(folder, name), box, voxel_size or 1.0)
    return names


def write_class_averages(stack, labels, vs, avg_dir, table, options=None, log=print, initial=None):
    """Each class's average (aligned with ``options.align``, with the alignment of each member
    added to ``table`` and the half averages written beside), and the per-class FSC
    resolution. ``initial``: every member's rotation and shift onto its class average, found
    by the refinement (the coarse search is then skipped)."""
    o = options or ClassifyOptions()
    os.makedirs(avg_dir, exist_ok=True)
    n = len(labels)
    euler, shifts, scores = np.zeros((n, 3)), np.zeros((n, 3)), np.full(n, np.nan)
    resolution = []
    plain = class_averages(stack, labels)
    for c in range(len(plain)):
        members = np.flatnonzero(labels == c)
        avg = plain[c]
        if o.align and len(members) >= 2:
            start = None if initial is None else (initial[0][members], initial[1][members])
            r = align_class(stack[members], tilt_range=o.tilt_range, voxel_size=vs or 1.0, coarse_step=o.align_step,
                            fine_step=o.align_step / 3, seed=o.seed, log=log, initial=start)
            avg = r["average"]
            euler[members], shifts[members], scores[members] = r["euler"], r["shifts"], r["scores"]
            for h in ("half1", "half2"):
                write_volume(os.path.join(avg_dir, f"class_{c + 1:02d}_{h}.mrc"), r[h], vs or 1.0)
            resolution.append({"class": c + 1, "members": int(len(members)),
                               "fsc_0143_A": round(r["resolution_0143"], 2), "fsc_05_A": round(r["resolution_05"], 2),
                               "fsc": [round(float(v), 4) for v in r["fsc"]]})
        write_volume(os.path.join(avg_dir, f"class_{c + 1:02d}.mrc"), avg, vs or 1.0)
    if o.align:
        for k, col in enumerate(("rot", "tilt", "psi")):
            table.extra[col] = np.round(euler[:, k], 2)
        for k, col in enumerate(("shift_x", "shift_y", "shift_z")):
            table.extra[col] = np.round(shifts[:, k], 2)
        table.extra["align_score"] = np.round(scores, 4)
    return resolution
