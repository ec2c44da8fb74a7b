"""picker3d simulate: synthetic tomograms (or sub-tomograms) with ground truth."""
import time

from ..errors import InputError


def add_args(sub):
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
    g = p.add_argument_group("what real tomograms bring (added to each reconstructed tomogram)")
    g.add_argument("--gradient", type=float, default=0.0, metavar="SIGMA",
                   help="thickness gradient: the mean ramps by +-SIGMA standard deviations across x (default 0)")
    g.add_argument("--carbon-edge", type=float, default=0.0, metavar="FRACTION",
                   help="a band of dense carbon over this fraction of y (default 0: none)")
    g.add_argument("--ice-blobs", type=int, default=0, metavar="N", help="N ice contamination blobs (default 0)")
    g.add_argument("--empty-ice", type=int, default=0, metavar="PLANES",
                   help="planes of empty ice added above and below the specimen (default 0)")
    g.add_argument("--invert", action="store_true", help="flip the contrast: particles bright (default: dark)")


def main(a):
    from ..simulation.dataset import write_simulation, write_subtomograms
    t0 = time.time()
    if a.subtomograms:
        n = write_subtomograms(a.out, a.subtomograms, a.box, a.seed, a.snr, a.species, a.voxel_size, a.tilt_range,
                               a.tilt_step)
        print(f"wrote {n} sub-tomograms of {a.box}^3 to {a.out} in {time.time() - t0:.1f} s")
        return 0
    kw = dict(shape=tuple(a.shape), snr=a.snr, species=a.species, voxel_size=a.voxel_size,
              tilt_range=a.tilt_range, tilt_step=a.tilt_step, crowders=a.crowders)
    if a.no_distractors:
        kw.update(crowders=0, vesicles=0, membranes=0, gold=0)
    for flag, value in (("--gradient", a.gradient), ("--ice-blobs", a.ice_blobs), ("--empty-ice", a.empty_ice)):
        if value < 0:
            raise InputError(f"{flag}: {value} must be 0 or more")
    if not 0 <= a.carbon_edge < 1:
        raise InputError(f"--carbon-edge: {a.carbon_edge} must be a fraction of y in [0, 1)")
    art = {"gradient": a.gradient, "carbon_edge": a.carbon_edge, "ice_blobs": a.ice_blobs,
           "empty_ice": a.empty_ice, "invert": a.invert}
    man = write_simulation(a.out, n_tomograms=a.n_tomograms, seed=a.seed,
                           artefacts=art if any(art.values()) else None, **kw)
    for t in man["tomograms"]:
        counts = ", ".join(f"{k} {v['count']}" for k, v in t["species"].items())
        print(f"{t['name']}: {counts} particles; {t['seconds']} s")
    print("diameters (voxels): " + ",".join(f"{k}={v}" for k, v in man["diameters"].items()))
    print(f"wrote {a.n_tomograms} tomogram(s) to {a.out} in {time.time() - t0:.1f} s")
    return 0
