"""Picking memory: peak resident memory of ``pick_tomogram`` for a 200x512x512
tomogram and one twice as large, each measured in a fresh process.

The tomogram (noise) is written to an MRC file first and picked the way ``picker3d pick``
does it: read and binned a few planes at a time, predicted and post-processed in z-slabs.
The network is untrained (memory does not depend on the weights). Prints seconds, peak
RSS, the full-size volume's size and the ratio of peak RSS between the two sizes.

Usage: python benchmarks/bench_memory.py [--bin 2] [--classes 5] [--channels 16,32,48,64] [--flips 1]
       [--depths 200,400]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from picker3d.engine.network import ResUNet3D
from picker3d.engine.picking.tomogram import pick_tomogram
shape, bin_, n_classes, channels, flips = json.loads(sys.argv[1])
torch.set_num_threads(2)
torch.manual_seed(0)
model = ResUNet3D(n_classes, channels=tuple(channels)).eval()
meta = {"classes": [f"c{i}" for i in range(n_classes)], "diameters": {f"c{i}": 12.0 for i in range(n_classes)},
        "bin": bin_, "tile": 96, "pad": 12, "flips": flips}
path = sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.time()
from picker3d.engine.formats.mrc import read_binned
binned, vs, full_shape = read_binned(path, bin_)        # as 'picker3d pick' reads it
table, _ = pick_tomogram(model, meta, binned, prebinned=True)
print(json.dumps({"shape": shape, "seconds": round(time.time() - t0, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "rss_before_pick_mb": round(base, 1), "volume_mb": round(4 * np.prod(shape) / 2**20, 1)}))
"""

WRITE = r"""
import sys, json, numpy as np
from picker3d.engine.formats.mrc import write_volume
shape = json.loads(sys.argv[1])
# noise, written a slab at a time would need a streaming writer: the writer process holds it once
write_volume(sys.argv[2], np.random.default_rng(0).standard_normal(shape, dtype=np.float32), 10.0)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", type=int, default=2)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--channels", default="16,32,48,64")
    ap.add_argument("--flips", type=int, default=1)
    ap.add_argument("--depths", default="200,400", help="tomogram thicknesses (planes) compared, 512x512 each")
    a = ap.parse_args()
    results = []
    tmp = tempfile.mkdtemp(prefix="picker3d_mem_")
    for shape in ([int(d), 512, 512] for d in a.depths.split(",")):
        path = os.path.join(tmp, "tomo.mrc")
        subprocess.run([sys.executable, "-c", WRITE, json.dumps(shape), path], check=True)
        args = json.dumps([shape, a.bin, a.classes, [int(c) for c in a.channels.split(",")], a.flips])
        out = subprocess.run([sys.executable, "-c", CHILD, args, path], capture_output=True, text=True, check=True)
        os.remove(path)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res), flush=True)
    r0, r1 = results[0], results[-1]
    print(f"peak RSS ratio ({r1['volume_mb'] / r0['volume_mb']:g}x volume / 1x volume): "
          f"{r1['peak_rss_mb'] / r0['peak_rss_mb']:.2f}; full-size volumes "
          + ", ".join(f"{r['volume_mb']:.0f} MB" for r in results), flush=True)


if __name__ == "__main__":
    main()
