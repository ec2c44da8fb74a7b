"""picker3d copick-read / copick-write: a copick project's tomograms and picks as files, and
tables back into it."""
import os

from ..errors import InputError
from .common import add_copick, copick_runs


def add_args(sub):
    p = sub.add_parser("copick-read", help="a copick project's tomograms (MRC) and picks (tables) as files")
    add_copick(p)
    p.add_argument("--out-dir", required=True,
                   help="writes OUT_DIR/<run>.mrc, OUT_DIR/<run>.tsv (the picks, in voxels) and copick_runs.json")
    p = sub.add_parser("copick-write", help="coordinate tables into a copick project, as a user / session's picks")
    p.add_argument("--copick-config", required=True, metavar="JSON", help="copick configuration file")
    p.add_argument("--coords", nargs="+", required=True,
                   help="one coordinate table per run (voxels of --voxel-spacing; run = the file stem unless --runs)")
    p.add_argument("--runs", nargs="+", default=[], help="the run of each table (default: the tables' file stems)")
    p.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")
    p.add_argument("--voxel-spacing", type=float, default=10.0, help="voxel size of the coordinates in Å (default 10)")
    p.add_argument("--out-user", default="picker3d", help="copick user of the picks (default picker3d)")
    p.add_argument("--out-session", default="0", help="copick session of the picks (default 0)")
    p.add_argument("--diameters", default=None,
                   help="name=VOX,...: radius of the objects the configuration lacks (added; default: none given)")


def main_read(a):
    from ..formats.copick_project import export_runs
    root, runs = copick_runs(a, a.runs)
    man = export_runs(root, runs, a.out_dir, a.voxel_spacing, a.tomo_type, a.picks_user, a.picks_session)
    for r in man["runs"]:
        print(f"{a.out_dir}/{r['run']}.mrc: {'x'.join(map(str, r['shape']))} voxels, {r['picks']} picks")
    return 0


def main_write(a):
    from ..formats.copick_project import write_picks
    from ..formats.readers import read_table
    from ..formats.table import parse_diameters
    names = a.runs or [os.path.splitext(os.path.basename(c))[0] for c in a.coords]
    if len(names) != len(a.coords):
        raise InputError(f"--runs: {len(names)} runs for {len(a.coords)} tables (--coords)")
    if a.voxel_spacing <= 0:
        raise InputError(f"--voxel-spacing: {a.voxel_spacing} must be positive")
    root, runs = copick_runs(a, names)          # every run and table checked before anything is written
    tables = [read_table(c, a.format, pixel_size=a.voxel_spacing, run_name=n) for c, n in zip(a.coords, names)]
    radii = {k: d / 2.0 * a.voxel_spacing for k, d in parse_diameters(a.diameters).items()}
    for run, table, path in zip(runs, tables, a.coords):
        added = write_picks(root, a.copick_config, run, table, a.voxel_spacing, a.out_user, a.out_session, radii)
        print(f"{path}: {len(table)} picks into run {run.name} as user {a.out_user}, session {a.out_session}"
              + (f"; objects added: {', '.join(added)}" if added else ""))
    return 0
