"""picker3d evaluate: picks against reference coordinates (JSON)."""
import json
import os

from ..errors import InputError
from .common import add_copick, copick_runs


def add_args(sub):
    p = sub.add_parser("evaluate", help="compare picks with reference coordinates (prints JSON)")
    p.add_argument("--pred", required=True, nargs="+",
                   help="predicted coordinate table(s); several: one per tomogram, in the order of --ref; with "
                        "--copick-config: the picks' USER[:SESSION]")
    p.add_argument("--ref", required=True, nargs="+",
                   help="reference coordinate table(s); with several pairs the JSON holds each tomogram's "
                        "figures (per_tomogram, by file stem) and the pooled ones (overall)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--radius-frac", type=float, default=0.5,
                   help="match radius as a fraction of the diameter (default 0.5)")
    g.add_argument("--radius", type=float, default=None, help="match radius in voxels (default: --radius-frac)")
    p.add_argument("--diameters", default=None, help="name=VOX,... (needed with --radius-frac)")
    p.add_argument("--occupancy", default=None, help="occupancy MRC for the SHREC hit test")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--metric", default="picking", choices=("picking", "challenge"),
                   help="picking (default): precision, recall, F1, AP per class and pooled; challenge: the CZII "
                        "challenge's score, F-beta (beta 4) per object from counts pooled over tomograms, a pick "
                        "found within half the particle radius, objects weighted (copick: metadata weight, else 1)")
    add_copick(p, picks_in=False)


def _user_session(text, what):
    user, _, session = text.partition(":")
    if not user:
        raise InputError(f"--{what}: '{text}' is not USER[:SESSION] (copick picks)")
    return user, session or None


def _evaluate_copick(a):
    """--pred / --ref as copick USER[:SESSION] of each run: picking figures pooled over the runs,
    or the challenge's score."""
    from ..formats.copick_project import object_radii, object_weights, read_picks
    from ..formats.table import parse_diameters
    from ..metrics import challenge_score, evaluate_tomograms
    if len(a.pred) != 1 or len(a.ref) != 1:
        raise InputError("--pred, --ref: with --copick-config each is one USER[:SESSION]")
    pu, ps = _user_session(a.pred[0], "pred")
    ru, rs = _user_session(a.ref[0], "ref")
    root, runs = copick_runs(a, a.runs)
    pairs = {r.name: (read_picks(r, a.voxel_spacing, pu, ps), read_picks(r, a.voxel_spacing, ru, rs)) for r in runs}
    if not any(len(ref) for _, ref in pairs.values()):
        raise InputError(f"--ref: no picks of user {ru}, session {rs or 'any'} in {a.copick_config}")
    radii = {k: v / a.voxel_spacing for k, v in object_radii(root).items() if v}
    radii.update({k: d / 2.0 for k, d in parse_diameters(a.diameters).items()})
    if a.metric == "challenge":
        return challenge_score(pairs, radii, object_weights(root))
    return evaluate_tomograms(pairs, {k: 2.0 * v for k, v in radii.items()}, radius_frac=a.radius_frac,
                              radius=a.radius)


def _evaluate_tables(a):
    from ..formats.mrc import read_volume
    from ..formats.readers import read_table
    from ..formats.table import parse_diameters
    from ..metrics import challenge_score, evaluate, evaluate_tomograms
    if len(a.pred) != len(a.ref):
        raise InputError(f"--pred: {len(a.pred)} tables for {len(a.ref)} reference tables (--ref): give one per "
                         f"tomogram, in the same order")
    preds = [read_table(p, allow_empty=True) for p in a.pred]
    refs = [read_table(r) for r in a.ref]
    diam = parse_diameters(a.diameters)
    if a.radius is None and not diam:
        raise InputError("--diameters: needed to turn --radius-frac into voxels (or give --radius)")
    occ = read_volume(a.occupancy, dtype="int32")[0] if a.occupancy else None
    if a.metric == "challenge":
        if not diam:
            raise InputError("--diameters: the challenge's metric needs each class's diameter (name=VOX,...)")
        runs = {f"{i}": (p, r) for i, (p, r) in enumerate(zip(preds, refs))}
        return challenge_score(runs, {k: d / 2.0 for k, d in diam.items()})
    if len(refs) == 1:
        return evaluate(preds[0], refs[0], diam, radius_frac=a.radius_frac, radius=a.radius, occupancy=occ)
    if occ is not None:
        raise InputError("--occupancy: one occupancy map goes with one --pred / --ref pair")
    names = [os.path.splitext(os.path.basename(r))[0] for r in a.ref]
    if len(set(names)) < len(names):
        names = [f"{i + 1}_{n}" for i, n in enumerate(names)]     # same stems in other folders
    return evaluate_tomograms(dict(zip(names, zip(preds, refs))), diam, radius_frac=a.radius_frac, radius=a.radius)


def main(a):
    res = _evaluate_copick(a) if a.copick_config else _evaluate_tables(a)
    text = json.dumps(res, indent=1)
    if a.out:
        from ..fileio import atomic_text
        atomic_text(a.out, text + "\n")
    print(text)
    return 0
