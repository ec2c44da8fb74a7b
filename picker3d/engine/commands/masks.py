"""picker3d masks: weak-label masks from particle centres."""


def add_args(sub):
    p = sub.add_parser("masks", help="weak-label masks from particle centres")
    p.add_argument("--tomogram", required=True, help="tomogram MRC (gives shape and voxel size)")
    p.add_argument("--coords", required=True, help="coordinate table")
    p.add_argument("--diameters", required=True, help="name=VOX,... or one number for all classes")
    p.add_argument("--type", default="tball", choices=("tball", "ball", "cubic", "sphere", "gaussian"),
                   help="mask shape (default tball)")
    p.add_argument("--out", required=True, help="output mask MRC")
    p.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")


def main(a):
    from ..formats.mrc import read_volume, write_volume
    from ..formats.readers import read_table
    from ..formats.table import parse_diameters
    from ..masks import label_mask
    data, voxel_size = read_volume(a.tomogram)  # validates the file (exists, 3D, finite)
    shape = data.shape
    del data
    table = read_table(a.coords, a.format)
    table.check_inside(shape, a.coords)
    mask = label_mask(shape, table, parse_diameters(a.diameters), a.type)
    write_volume(a.out, mask, voxel_size)
    n = int((mask > 0).sum())
    print(f"{a.out}: {a.type} mask for {len(table)} particles, {n} labelled voxels "
          f"({100.0 * n / mask.size:.2f}% of the volume)")
    return 0
