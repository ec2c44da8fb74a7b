"""What several commands share: the copick project and GPU flags, retired flags, the log."""
import argparse

from ..errors import InputError


def log(message):
    print(message, flush=True)


class Removed(argparse.Action):
    """A retired flag: one error line saying so and what to use instead."""

    def __init__(self, option_strings, dest, instead="", **kw):
        kw.pop("nargs", None)
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS, **kw)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None):
        raise InputError(f"{option_string}: removed in picker3d 0.2; {self.instead}")


def add_copick(p, picks_in=True, picks_out=False, val_runs=False):
    """Options that read tomograms (and picks) from a copick project instead of MRC files and
    tables (picker3d.engine.formats.copick_project)."""
    g = p.add_argument_group("copick project (instead of MRC files and tables)")
    g.add_argument("--copick-config", default=None, metavar="JSON",
                   help="copick configuration file: the runs' tomograms (and picks) are read from the project "
                        "(needs the copick library: pip install 'scipion-em-picker3d[engine,copick]')")
    g.add_argument("--runs", nargs="+", default=[], help="runs to read (default: every run of the project)")
    if val_runs:
        g.add_argument("--val-runs", nargs="*", default=[],
                       help="validation runs, annotated like the training runs (default: none)")
    g.add_argument("--voxel-spacing", type=float, default=10.0, help="voxel spacing of the tomograms in Å (default 10)")
    g.add_argument("--tomo-type", default="wbp", help="reconstruction type of the tomograms (default wbp)")
    if picks_in:
        g.add_argument("--picks-user", default=None, help="read the picks of this user (default: any)")
        g.add_argument("--picks-session", default=None, help="read the picks of this session (default: any)")
    if picks_out:
        g.add_argument("--out-user", default="picker3d",
                       help="write the picks back into the project as this user (default picker3d)")
        g.add_argument("--out-session", default="0", help="... and this session (default 0)")


def copick_source(a, names=None):
    """The copick keywords of --copick-config, --runs, --voxel-spacing, --tomo-type,
    --picks-user and --picks-session (annotated_runs' without ``root``)."""
    return {"config": a.copick_config, "names": a.runs if names is None else names, "voxel_spacing": a.voxel_spacing,
            "tomo_type": a.tomo_type, "user": getattr(a, "picks_user", None),
            "session": getattr(a, "picks_session", None)}


def copick_runs(a, names):
    """(project, runs) of --copick-config named (every run when none)."""
    from ..formats.copick_project import open_project, select_runs
    root = open_project(a.copick_config)
    return root, select_runs(root, names, a.copick_config)


def add_gpu(p):
    p.add_argument("--gpu", nargs="+", default=None, metavar="ID",
                   help="GPU ids to use (space-separated, as Scipion's %%(GPU)s gives them): with --device auto or "
                        "cuda, the same as --device cuda:ID[,cuda:ID2]; with --device auto and no CUDA, the CPU "
                        "(default: none, --device decides)")


def options_of(a, options):
    """The declared options' values from the parsed arguments (name -> value)."""
    return {o.name: getattr(a, o.name) for o in options if o.cli}
