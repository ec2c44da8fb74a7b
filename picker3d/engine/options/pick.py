"""The options of ``picker3d pick`` / :func:`picker3d.engine.picking.files.pick_files` / the
pick protocol, each declared once (:class:`Option`)."""
from ..errors import InputError
from .base import PRECISION, Option, at_least, options_class, positive_voxel_size


def z_range(text, nz=None, path=""):
    """--z-range as picking's ``specimen``: "auto", None (all) or (z0, z1); with ``nz`` also
    checked against the tomogram's planes."""
    text = (text or "auto").strip()
    if text in ("auto", "all"):
        return None if text == "all" else "auto"
    try:
        z0, z1 = (float(v) for v in text.split("-"))
    except ValueError:
        raise InputError(f"--z-range: '{text}' is not auto, all or Z0-Z1") from None
    if not 0 <= z0 < z1:
        raise InputError(f"--z-range: '{text}' needs 0 <= Z0 < Z1")
    if nz is not None and z1 > nz:
        raise InputError(f"--z-range: {text} lies outside the {nz} planes of {path} (0-{nz})")
    return z0, z1


def _z_range(v, _values):
    try:
        z_range(v)
    except InputError as exc:
        return str(exc).partition(": ")[2]
    return None


def _threshold(v, _values):
    return None if v is None or 0 <= v <= 1 else f"{v:g} must be a score between 0 and 1"


OUT, P, R, C = "output", "picking", "the tomograms as they are", "compute"
GROUPS = (OUT, P, R, C)

PICK_OPTIONS = (
    Option("format", "tsv", group=OUT, argparse={"choices": ("tsv", "relion5", "relion", "dynamo", "copick")},
           help="also write the picks as: relion5 (OUT_DIR/<stem>.star, rlnTomoName and "
                "rlnCenteredCoordinateX/Y/ZAngst), relion (RELION 3/4 rlnCoordinateX/Y/Z in pixels), dynamo "
                "(OUT_DIR/<stem>.tbl), copick (OUT_DIR/<stem>_<class>.json, Å); default tsv: the table only"),
    Option("score_map", False, group=OUT, argparse={"action": "store_true"},
           help="also write OUT_DIR/<stem>_score.mrc (default: not)"),
    Option("classes", None, group=OUT, help="comma-separated classes to keep (default: all the model's classes)"),
    Option("threshold", None, group=P, check=_threshold, argparse={"type": float},
           help="score threshold for all classes (default: the model's calibrated thresholds)"),
    Option("mode", "peaks", group=P, argparse={"choices": ("peaks", "cc")},
           help="peaks (default): local maxima at each class's scale; cc: connected components"),
    Option("flips", None, group=P, argparse={"type": int, "choices": (1, 2, 4, 8)},
           help="test-time mirrored copies to average (default: the model's)"),
    Option("border", 0.0, group=P, check=at_least(0, " voxels"), argparse={"type": float},
           help="drop particles whose centre is closer than this (voxels) to the volume's faces (default 0)"),
    Option("tile", None, group=P, argparse={"type": int}, help="tile side (default: the model's)"),
    Option("pad", None, group=P, argparse={"type": int},
           help="tile overlap padding: neighbouring tiles overlap by at least twice this (default: the model's)"),
    Option("voxel_size", None, group=R, check=positive_voxel_size, argparse={"type": float, "metavar": "A"},
           help="the tomograms' voxel size in Å (default: the MRC header's; a header with none, 0 or 1 Å, is "
                "taken as the model's). A tomogram more than 2 %% off the model's voxel size is resampled to it "
                "and the picks mapped back to its voxels"),
    Option("invert", False, group=R, argparse={"action": "store_true"},
           help="flip the contrast (for tomograms whose dense material is the opposite of the training "
                "tomograms'; default: as they are)"),
    Option("polarity_check", True, group=R, flag="--no-polarity-check", argparse={"action": "store_false"},
           help="pick even when the contrast looks inverted relative to the model (default: stop with a line "
                "naming --invert)"),
    Option("z_range", "auto", group=R, check=_z_range, argparse={"metavar": "Z0-Z1"},
           help="keep picks in these z planes (voxels, Z1 exclusive); auto (default): the specimen slab found "
                "from the band-passed density per plane (empty ice above and below left out); all: every plane"),
    Option("device", "auto", group=C,
           help="auto (default), cpu, cuda or cuda:N; a comma-separated list (cuda:0,cuda:1) picks the tomograms "
                "on several devices at once, one model per device"),
    PRECISION,
)

PickOptions = options_class(
    "PickOptions", PICK_OPTIONS,
    "The options of a picking run (``PickOptions(z_range='all', format='relion5', ...)``).")
