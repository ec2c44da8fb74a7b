"""The README's main command: the default workflow on the embedded simulated dataset.

Now: simulate three tomograms (train / validation / test, 96x256x256, SNR 0.05, five
species plus unlabelled crowders, membranes and gold), make TBall weak labels, and
evaluate the ground truth against itself through the full metric code path.
"""
import argparse
import json
import os
import time

from picker3d.engine.cli import main as cli


def run(out_dir="demo_output", seed=0, shape=(96, 256, 256), snr=0.05):
    t0 = time.time()
    sim = os.path.join(out_dir, "simulated")
    print(f"[1/3] simulate 3 tomograms {shape[0]}x{shape[1]}x{shape[2]} at SNR {snr} -> {sim}")
    cli(["simulate", "--out", sim, "--seed", str(seed), "--n-tomograms", "3", "--snr", str(snr),
         "--shape", *map(str, shape)])
    with open(os.path.join(sim, "manifest.json")) as fh:
        man = json.load(fh)
    diam = ",".join(f"{k}={v}" for k, v in man["diameters"].items())
    print(f"[2/3] TBall weak labels (DeepETPicker §A.3), diameters {diam}")
    for t in man["tomograms"]:
        cli(["masks", "--tomogram", os.path.join(sim, t["tomogram"]), "--coords", os.path.join(sim, t["coords"]),
             "--diameters", diam, "--type", "tball", "--out", os.path.join(out_dir, t["name"] + "_tball.mrc")])
    print("[3/3] evaluate the test tomogram's ground truth against itself (sanity of the metric path)")
    test = man["tomograms"][2]
    res_file = os.path.join(out_dir, "evaluation.json")
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        cli(["evaluate", "--pred", os.path.join(sim, test["coords"]), "--ref", os.path.join(sim, test["coords"]),
             "--diameters", diam, "--occupancy", os.path.join(sim, test["occupancy"]), "--out", res_file])
    res = json.loads(buf.getvalue())
    print(f"      particles {res['n_ref']}: F1 {res['f1']:.3f}, mean class F1 {res['mean_class_f1']:.3f}, "
          f"AP {res['ap']:.3f}, CZII F4 {res['czii_fbeta']:.3f}, SHREC hits {res['shrec']['hits']}")
    print(f"done in {time.time() - t0:.1f} s; outputs in {os.path.abspath(out_dir)}")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m picker3d.demo", description=__doc__)
    p.add_argument("--out", default="demo_output")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    run(a.out, a.seed)


if __name__ == "__main__":
    main()
