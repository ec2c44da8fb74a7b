"""copick projects (the format of the CZ cryo-ET data portal and of the CZII picking
challenge): tomograms and picks in, picks out, through the ``copick`` library.

copick keeps positions in Å (``location`` plus the translation of the point's transform);
picker3d works in voxels of the tomogram at the chosen voxel spacing, so a position is
``Å / voxel spacing``, x along the last array axis, origin 0 at the centre of the first voxel.
copick is an optional dependency of the engine environment (``pip install
"scipion-em-picker3d[engine,copick]"``): it needs numpy >= 2, which Scipion's environment
does not have, so only the engine imports it, and only here.
"""
import os

import numpy as np

from ..errors import InputError
from .table import CoordTable


def _copick():
    try:
        import copick
    except ImportError:
        raise InputError("--copick-config: the copick library is not installed in this environment "
                         "(pip install 'scipion-em-picker3d[engine,copick]')") from None
    return copick


def open_project(config):
    """The copick root of the configuration file ``config``."""
    if not config or not os.path.isfile(config):
        raise InputError(f"--copick-config: {config}: configuration file not found")
    copick = _copick()
    try:
        return copick.from_file(config)
    except Exception as exc:
        raise InputError(f"--copick-config: {config}: not a readable copick configuration ({exc})") from exc


def select_runs(root, names, config=""):
    """The runs named (all of the project's when ``names`` is empty), in that order."""
    runs = {r.name: r for r in root.runs}
    if not names:
        if not runs:
            raise InputError(f"--copick-config: {config} holds no runs")
        return [runs[n] for n in sorted(runs)]
    missing = [n for n in names if n not in runs]
    if missing:
        raise InputError(f"--runs: no run {', '.join(missing)} in {config} (runs: {', '.join(sorted(runs)) or 'none'})")
    return [runs[n] for n in names]


def read_tomogram(run, voxel_spacing, tomo_type):
    """``(volume z y x float32, voxel size Å)`` of a run's tomogram at ``voxel_spacing`` and of
    reconstruction type ``tomo_type`` (full resolution, read from its OME-Zarr)."""
    spacing = run.get_voxel_spacing(voxel_spacing)
    if spacing is None:
        have = ", ".join(f"{v.voxel_size:g}" for v in run.voxel_spacings) or "none"
        raise InputError(f"--voxel-spacing: run {run.name} has no voxel spacing {voxel_spacing:g} Å (it has: {have})")
    tomo = spacing.get_tomogram(tomo_type)
    if tomo is None:
        have = ", ".join(t.tomo_type for t in spacing.tomograms) or "none"
        raise InputError(f"--tomo-type: run {run.name} has no '{tomo_type}' tomogram at {voxel_spacing:g} Å "
                         f"(it has: {have})")
    data = np.asarray(tomo.numpy(), dtype=np.float32)
    if data.ndim != 3 or not np.all(np.isfinite(data)):
        raise InputError(f"run {run.name}: the '{tomo_type}' tomogram is not a finite 3-D volume")
    return data, float(voxel_spacing)


def object_radii(root):
    """{object name: radius in Å} of the project's particle objects (None where unset)."""
    return {o.name: o.radius for o in root.pickable_objects if o.is_particle}


def object_weights(root):
    """{object name: weight of the challenge metric}: ``metadata["weight"]`` where set, else 1."""
    return {o.name: float((o.metadata or {}).get("weight", 1.0)) for o in root.pickable_objects if o.is_particle}


def read_picks(run, voxel_spacing, user=None, session=None, objects=None):
    """A run's picks by ``user`` / ``session`` (all when None) as one CoordTable in voxels
    of ``voxel_spacing`` (class = object name, score kept)."""
    picks = run.get_picks(object_name=objects, user_id=user, session_id=session)
    xyz, classes, scores = [], [], []
    for p in picks:
        if not p.points:
            continue
        pos = p.full_positions() if hasattr(p, "full_positions") else p.numpy()[0]
        xyz.append(np.asarray(pos, float) / voxel_spacing)
        classes += [p.pickable_object_name] * len(pos)
        scores.append([1.0 if q.score is None else float(q.score) for q in p.points])
    if not xyz:
        return CoordTable(np.zeros((0, 3)), [], [])
    return CoordTable(np.concatenate(xyz), classes, np.concatenate(scores))


def read_run(run, voxel_spacing, tomo_type, user=None, session=None):
    """``(volume, voxel size, picks)`` of one run, the picks checked to lie in the volume."""
    vol, vs = read_tomogram(run, voxel_spacing, tomo_type)
    picks = read_picks(run, voxel_spacing, user, session)
    if len(picks):
        picks.check_inside(vol.shape, f"run {run.name}'s picks")
    return vol, vs, picks


def write_picks(root, config, run, table, voxel_spacing, user, session, radii_A=None):
    """Write ``table`` (voxels of ``voxel_spacing``) as the run's picks of ``user`` /
    ``session``, one picks file per class, the score of each point kept. A class the
    configuration lacks is added to it as a particle object with its radius (``radii_A``, Å)
    and the configuration file saved."""
    names = table.class_names() if table.classes is not None else ["particle"]
    known = {o.name for o in root.pickable_objects}
    added = [n for n in names if n not in known]
    for name in added:
        radius = (radii_A or {}).get(name)
        root.new_object(name=name, is_particle=True, radius=None if radius is None else float(radius))
    if added:
        root.save_config(config)
    for name in names:
        rows = table.subset(table.classes == name) if table.classes is not None else table
        picks = run.new_picks(object_name=name, session_id=str(session), user_id=str(user), exist_ok=True)
        scores = rows.scores if rows.scores is not None else np.ones(len(rows))
        picks.from_numpy(rows.xyz * float(voxel_spacing), scores=np.asarray(scores, float))
        picks.store()
    return added


def export_runs(root, runs, out_dir, voxel_spacing, tomo_type, user=None, session=None):
    """Each run's tomogram as ``out_dir/<run>.mrc`` (voxel size in the header) and its picks as
    ``out_dir/<run>.tsv`` (voxels; runs without picks get none); returns ``{"runs": [...],
    "voxel_spacing", "radii": {object: Å}}`` (also written as ``out_dir/copick_runs.json``)."""
    import json

    from ..fileio import atomic_text
    from .mrc import write_volume
    from .writers import write_table
    os.makedirs(out_dir, exist_ok=True)
    done = []
    for run in runs:
        vol, vs, picks = read_run(run, voxel_spacing, tomo_type, user, session)
        write_volume(os.path.join(out_dir, run.name + ".mrc"), vol, vs)
        if len(picks):
            write_table(os.path.join(out_dir, run.name + ".tsv"), picks)
        done.append({"run": run.name, "shape": list(vol.shape), "picks": len(picks)})
    manifest = {"runs": done, "voxel_spacing": float(voxel_spacing), "radii": object_radii(root)}
    atomic_text(os.path.join(out_dir, "copick_runs.json"), json.dumps(manifest, indent=1) + "\n")
    return manifest


def annotated_runs(root, config, names, voxel_spacing, tomo_type, user=None, session=None, what=""):
    """(run name, volume, voxel size, picks table) of each run of ``root`` named (every run
    when none); a run without picks of ``user`` / ``session`` is refused (``what``: the flag's
    prefix in the message, 'val-' for --val-runs)."""
    out = []
    for run in select_runs(root, names, config):
        vol, vs, tab = read_run(run, voxel_spacing, tomo_type, user, session)
        if not len(tab):
            raise InputError(f"--{what}runs: run {run.name} has no picks of user {user or 'any'}, session "
                             f"{session or 'any'} in {config}")
        out.append((run.name, vol, vs, tab))
    return out


def training_runs(config, runs, val_runs, diameters, voxel_spacing, tomo_type, user=None, session=None):
    """The training and validation runs of a copick project as ``(volumes, tables, voxel
    sizes, val volumes, val tables, val voxel sizes, diameters)``; the diameters (voxels)
    default to twice each picked object's radius, and picks of objects not trained on are
    left out."""
    if not runs:
        raise InputError("--runs: name the training runs of the copick project (and --val-runs the validation ones)")
    root = open_project(config)
    radii = object_radii(root)
    unknown = [c for c in diameters if c != "*" and c not in radii]
    if unknown:
        raise InputError(f"--diameters: no object {', '.join(unknown)} in {config} "
                         f"(its particle objects: {', '.join(sorted(radii)) or 'none'})")
    train = annotated_runs(root, config, runs, voxel_spacing, tomo_type, user, session)
    val = annotated_runs(root, config, val_runs, voxel_spacing, tomo_type, user, session, "val-") if val_runs else []
    if not diameters:
        picked = sorted({c for _, _, _, t in train for c in t.class_names()})
        missing = [c for c in picked if not radii.get(c)]
        if missing:
            raise InputError(f"--diameters: the copick objects {', '.join(missing)} have no radius in {config}: "
                             f"give name=VOX for each class")
        diameters = {c: round(2.0 * radii[c] / voxel_spacing, 2) for c in picked}

    def of_classes(t):      # picks of objects the model is not trained on are left out
        return t if "*" in diameters else t.subset([i for i, c in enumerate(t.classes) if c in diameters])

    return ([v for _, v, _, _ in train], [of_classes(t) for _, _, _, t in train], [s for _, _, s, _ in train],
            [v for _, v, _, _ in val], [of_classes(t) for _, _, _, t in val], [s for _, _, s, _ in val], diameters)
