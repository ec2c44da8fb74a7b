"""The ``picker3d`` command line: a public contract (add flags, never rename them).

Sub-commands: simulate, masks, evaluate (train, pick and classify arrive with their
engines). Bad input ends in one line ``picker3d: error: ...`` naming the culprit and
exit status 2; no traceback is shown (set PICKER3D_DEBUG=1 to see it).
"""
import argparse
import json
import os
import sys
import time

from .errors import InputError


def _add_simulate(sub):
    p = sub.add_parser("simulate", help="generate synthetic tomograms (or sub-tomograms) with ground truth")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (tomogram i uses seed+i)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=[96, 256, 256])
    p.add_argument("--snr", type=float, default=0.05, help="per-projection SNR (inf = noise free)")
    p.add_argument("--species", nargs="+", default=None,
                   help="species to include (default: large barrel shell rod tiny)")
    p.add_argument("--tilt-range", type=float, default=60.0, help="max tilt angle, degrees (±)")
    p.add_argument("--tilt-step", type=float, default=3.0, help="tilt increment, degrees")
    p.add_argument("--voxel-size", type=float, default=10.0, help="voxel size in Å")
    p.add_argument("--n-tomograms", type=int, default=1, help="number of tomograms")
    p.add_argument("--crowders", type=int, default=None, help="unlabelled crowder particles (default scales with volume)")
    p.add_argument("--no-distractors", action="store_true", help="no membranes, vesicles, gold or crowders")
    p.add_argument("--subtomograms", type=int, default=0, metavar="N",
                   help="sub-tomogram mode: N labelled boxes per species instead of tomograms")
    p.add_argument("--box", type=int, default=32, help="sub-tomogram box size (voxels)")


def _add_masks(sub):
    p = sub.add_parser("masks", help="weak-label masks from particle centres")
    p.add_argument("--tomogram", required=True, help="tomogram MRC (gives shape and voxel size)")
    p.add_argument("--coords", required=True, help="coordinate table")
    p.add_argument("--diameters", required=True, help="name=VOX,... or one number for all classes")
    p.add_argument("--type", default="tball", choices=("tball", "ball", "cubic", "sphere", "gaussian"))
    p.add_argument("--out", required=True, help="output mask MRC")
    p.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="compare picks with reference coordinates (prints JSON)")
    p.add_argument("--pred", required=True, help="predicted coordinate table")
    p.add_argument("--ref", required=True, help="reference coordinate table")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--radius-frac", type=float, default=0.5, help="match radius as a fraction of the diameter")
    g.add_argument("--radius", type=float, default=None, help="match radius in voxels")
    p.add_argument("--diameters", default=None, help="name=VOX,... (needed with --radius-frac)")
    p.add_argument("--occupancy", default=None, help="occupancy MRC for the SHREC hit test")
    p.add_argument("--out", default=None, help="also write the JSON here")


def build_parser():
    from picker3d import __version__
    parser = argparse.ArgumentParser(prog="picker3d", description="Deep-learning particle picking in cryo-ET.")
    parser.add_argument("--version", action="version", version=f"picker3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_masks(sub)
    _add_evaluate(sub)
    return parser


def cmd_simulate(a):
    from .simulate import write_simulation, simulate_subtomograms
    from .mrcio import write_volume
    from .coords import CoordTable, write_table
    import numpy as np
    t0 = time.time()
    if a.subtomograms:
        stack, rows = simulate_subtomograms(a.subtomograms, a.box, a.seed, a.snr, a.species, a.voxel_size,
                                            a.tilt_range, a.tilt_step)
        os.makedirs(a.out, exist_ok=True)
        write_volume(os.path.join(a.out, "subtomograms.mrc"), stack, a.voxel_size)
        table = CoordTable(np.zeros((len(rows), 3)) + (a.box - 1) / 2, [r["class"] for r in rows],
                           extra={k: [r[k] for r in rows] for k in ("rot", "tilt", "psi", "dx", "dy", "dz")})
        write_table(os.path.join(a.out, "subtomograms.tsv"), table)
        print(f"wrote {len(rows)} sub-tomograms of {a.box}^3 to {a.out} in {time.time() - t0:.1f} s")
        return 0
    kw = dict(shape=tuple(a.shape), snr=a.snr, species=a.species, voxel_size=a.voxel_size,
              tilt_range=a.tilt_range, tilt_step=a.tilt_step, crowders=a.crowders)
    if a.no_distractors:
        kw.update(crowders=0, vesicles=0, membranes=0, gold=0)
    man = write_simulation(a.out, n_tomograms=a.n_tomograms, seed=a.seed, **kw)
    for t in man["tomograms"]:
        counts = ", ".join(f"{k} {v['count']}" for k, v in t["species"].items())
        print(f"{t['name']}: {counts} particles; {t['seconds']} s")
    print("diameters (voxels): " + ",".join(f"{k}={v}" for k, v in man["diameters"].items()))
    print(f"wrote {a.n_tomograms} tomogram(s) to {a.out} in {time.time() - t0:.1f} s")
    return 0


def cmd_masks(a):
    from .coords import read_table, parse_diameters
    from .masks import label_mask
    from .mrcio import read_shape, read_voxel_size, write_volume, read_volume
    read_volume(a.tomogram)  # validates the file (exists, 3D, finite)
    shape = read_shape(a.tomogram)
    table = read_table(a.coords, a.format)
    table.check_inside(shape, a.coords)
    diam = parse_diameters(a.diameters)
    mask = label_mask(shape, table, diam, a.type)
    write_volume(a.out, mask, read_voxel_size(a.tomogram))
    n = int((mask > 0).sum())
    print(f"{a.out}: {a.type} mask for {len(table)} particles, {n} labelled voxels "
          f"({100.0 * n / mask.size:.2f}% of the volume)")
    return 0


def cmd_evaluate(a):
    from .coords import read_table, parse_diameters
    from .metrics import evaluate
    from .mrcio import read_volume
    pred = read_table(a.pred, allow_empty=True)
    ref = read_table(a.ref)
    diam = parse_diameters(a.diameters)
    if a.radius is None and not diam:
        raise InputError("--diameters: needed to turn --radius-frac into voxels (or give --radius)")
    occ = read_volume(a.occupancy, dtype="int32")[0] if a.occupancy else None
    res = evaluate(pred, ref, diam, radius_frac=a.radius_frac, radius=a.radius, occupancy=occ)
    text = json.dumps(res, indent=1)
    if a.out:
        from .coords import _atomic_text
        _atomic_text(a.out, text + "\n")
    print(text)
    return 0


COMMANDS = {"simulate": cmd_simulate, "masks": cmd_masks, "evaluate": cmd_evaluate}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        if os.environ.get("PICKER3D_DEBUG"):
            raise
        print(f"picker3d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("picker3d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
