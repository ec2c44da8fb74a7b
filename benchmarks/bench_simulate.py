"""Simulation speed and output sizes (printed figures, not a timed test).

Usage: python benchmarks/bench_simulate.py [--shape 96 256 256]
"""
import argparse
import os
import tempfile
import time

import torch

from picker3d.engine.simulation.dataset import write_simulation


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    times = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.repeats):
            t0 = time.time()
            man = write_simulation(d, n_tomograms=1, seed=r, shape=tuple(a.shape))
            times.append(time.time() - t0)
        sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    t = man["tomograms"][0]
    print(f"shape {a.shape}: {min(times):.2f} s (best of {a.repeats}; target < 60 s), "
          f"{sum(v['count'] for v in t['species'].values())} labelled particles")
    for f, s in sizes.items():
        print(f"  {f:28s} {s / 1e6:8.2f} MB")


if __name__ == "__main__":
    main()
