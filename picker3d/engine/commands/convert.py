"""picker3d convert: a coordinate table in another program's format."""
import os

from ..errors import InputError
from ..formats.writers import OUTPUT_FORMATS


def add_args(sub):
    p = sub.add_parser("convert", help="write a coordinate table in another program's format")
    p.add_argument("--in", dest="input", required=True, help="coordinate file (any format picker3d reads)")
    p.add_argument("--format", default=None, help="its format (default: from the extension)")
    p.add_argument("--out", required=True, help="file to write (copick: one OUT-stem_<class>.json per class)")
    p.add_argument("--to", required=True, choices=tuple(OUTPUT_FORMATS), help="format to write")
    p.add_argument("--tomogram", default=None,
                   help="the tomogram (MRC) the coordinates refer to: its shape and voxel size (needed for "
                        "relion5 and copick, both in Å, and to read RELION 5 or copick input)")
    p.add_argument("--voxel-size", type=float, default=None,
                   help="voxel size in Å when the tomogram's header has none (default: the header's)")
    p.add_argument("--tomo-name", default=None, help="rlnTomoName / copick run (default: the tomogram's file stem)")


def main(a):
    from ..formats.mrc import read_shape, read_voxel_size, usable_voxel_size
    from ..formats.readers import read_table
    from ..formats.writers import write_format
    from ..sampling import given_voxel_size
    shape, vs = None, given_voxel_size(a.voxel_size)
    if a.tomogram:
        shape = read_shape(a.tomogram)
        vs = vs or read_voxel_size(a.tomogram)
    in_angstrom = a.to in ("relion5", "copick")
    if in_angstrom and shape is None:
        raise InputError(f"--tomogram: {a.to} coordinates are in Å from the tomogram: give the tomogram (MRC)")
    if in_angstrom and not usable_voxel_size(vs):
        raise InputError(f"--voxel-size: {a.tomogram} has no usable voxel size in its header ({vs:g} Å): "
                         f"give it (Å) for {a.to}")
    table = read_table(a.input, a.format, tomo_shape=shape, pixel_size=vs)
    if shape is not None:
        table.check_inside(shape, a.input)
    name = a.tomo_name or (os.path.splitext(os.path.basename(a.tomogram))[0] if a.tomogram else "tomogram")
    written = write_format(a.out, table, a.to, name, shape, vs)
    print(f"{', '.join(written)}: {len(table)} particles ({a.to})")
    return 0
