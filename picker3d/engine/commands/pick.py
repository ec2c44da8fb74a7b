"""picker3d pick: particles picked with a trained model."""
from ..errors import InputError
from ..options import PICK_OPTIONS, PickOptions, add_options, checked
from ..options.pick import GROUPS
from .common import add_copick, add_gpu, log, options_of


def add_args(sub):
    p = sub.add_parser("pick", help="pick particles with a trained model")
    g = p.add_argument_group("inputs")
    g.add_argument("--model", required=True, help="model file from 'picker3d train'")
    g.add_argument("--tomograms", nargs="+", default=[], help="tomograms to pick (MRC; or --copick-config)")
    groups = add_options(p, PICK_OPTIONS, GROUPS)
    groups["output"].add_argument("--out-dir", required=True, help="writes OUT_DIR/<stem>.tsv (x y z class score)")
    groups["the tomograms as they are"].add_argument(
        "--mask", nargs="+", default=None, metavar="MRC",
        help="one mask per tomogram (MRC of the tomogram's shape): picks only where it is non-zero (default: none)")
    add_copick(p, picks_in=False, picks_out=True)
    add_gpu(groups["compute"])


def main(a):
    import sys

    from ..devices import device_list
    from ..picking.files import pick_copick_runs, pick_files
    options = PickOptions(**checked(PICK_OPTIONS, options_of(a, PICK_OPTIONS)))
    # --device cuda:0,cuda:1: one model per device, tomograms dealt out in turn
    devices = device_list(a.device, a.gpu)
    if a.copick_config and a.tomograms:
        raise InputError("--tomograms: give MRC tomograms or --copick-config, not both")
    if a.copick_config:
        pick_copick_runs(a.model, a.copick_config, a.runs, a.out_dir, options, a.voxel_spacing, a.tomo_type,
                         a.out_user, a.out_session, devices[0], log=log)
        return 0
    if not a.tomograms:
        raise InputError("--tomograms: required (or give --copick-config)")
    pick_files(a.model, a.tomograms, a.out_dir, options, a.mask, devices, log=log,
               warn=lambda m: print(m, file=sys.stderr))
    return 0
