"""picker3d classify: picked sub-volumes sorted into homogeneous classes (DISCA)."""
import dataclasses

from ..options import CLASSIFY_OPTIONS, ClassifyOptions, add_options, checked
from ..options.classify import GROUPS
from .common import add_copick, add_gpu, copick_source, log, options_of


def add_args(sub):
    p = sub.add_parser("classify", help="sort picked sub-volumes into homogeneous classes (DISCA)")
    groups = add_options(p, CLASSIFY_OPTIONS, GROUPS)
    g = groups["inputs"]
    g.add_argument("--tomograms", nargs="+", default=[], help="tomograms (MRC) the coordinates refer to")
    g.add_argument("--coords", nargs="+", default=[], help="one coordinate table per tomogram")
    g.add_argument("--subtomograms", default=None,
                   help="instead of tomograms + coordinates: a stack of boxes (MRC, n x box x box x box, e.g. from "
                        "'picker3d simulate --subtomograms') with its table next to it (.tsv)")
    g.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")
    add_copick(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="output table: the input columns plus cluster and posterior")
    g.add_argument("--averages", default=None, help="folder for class averages (default: OUT stem + _averages)")
    g.add_argument("--boxes-dir", default=None,
                   help="also write every extracted sub-volume (full resolution, in the tomogram's normalised "
                        "units) as DIR/particle_NNNNNN.mrc, and DIR/particles.star: the boxes with their class and "
                        "alignment for RELION (3.1 sub-tomogram format, the missing wedge as DIR/wedge.mrc; even "
                        "boxes only); the table gets a box_file column")
    add_gpu(groups["compute"])


def main(a):
    from ..classification.files import classify_files
    from ..devices import device_list
    options = ClassifyOptions(**checked(CLASSIFY_OPTIONS, options_of(a, CLASSIFY_OPTIONS)))
    options = dataclasses.replace(options, device=device_list(a.device, a.gpu, single=True))
    classify_files(a.tomograms, a.coords, a.out, options, a.format, a.subtomograms,
                   copick_source(a) if a.copick_config else None, a.averages, a.boxes_dir, log=log)
    return 0
