"""How visible is each species? An oracle bound for the picking benchmark.

For every particle of a simulated tomogram, the matched filter with that particle's own
noise-free signal (the same scene reconstructed without noise, a box around the centre) is
applied at the true centre and at 300 random places away from it; d' = (response at the
centre - mean elsewhere) / std elsewhere (:func:`picker3d.engine.metrics.matched_filter_dprime`).
It is a practical upper bound for any picker: it knows the exact shape, orientation, CTF
and wedge of the particle (optimal in white noise; against the coloured noise of a
reconstruction a prewhitened filter could gain a little).

Searching a tomogram means comparing each particle against about N = volume / d³
independent noise positions, whose largest response is about sqrt(2 ln N) standard
deviations: a species whose d' is near that value can be found only about half of the
time, and not without as many false picks.

Usage: python benchmarks/bench_detectability.py [--seed 102] [--snr 0.05] [--shape 96 256 256]
"""
import argparse
import math

import numpy as np

from picker3d.engine.metrics import matched_filter_dprime
from picker3d.engine.simulation.dataset import simulate_tomogram


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=102, help="scene seed (102: the picking benchmark's test tomogram)")
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256])
    a = p.parse_args()
    noisy = simulate_tomogram(shape=tuple(a.shape), seed=a.seed, snr=a.snr)
    clean = simulate_tomogram(shape=tuple(a.shape), seed=a.seed, snr=None)
    diam = {k: v["diameter_vox"] for k, v in noisy["manifest"]["species"].items()}
    rng = np.random.default_rng(0)
    shape = np.array(noisy["tomogram"].shape)
    per_class = {}
    for r in noisy["rows"]:
        half = int(math.ceil(diam[r["class"]] / 2)) + 1
        zyx = [int(round(r[k])) for k in ("z", "y", "x")]
        try:
            d = matched_filter_dprime(noisy["tomogram"], clean["tomogram"], zyx, half, rng)
        except ValueError:      # too close to the border for a whole box: not counted
            continue
        per_class.setdefault(r["class"], []).append(d)
    print(f"oracle matched filter, seed {a.seed}, SNR {a.snr}, shape {tuple(a.shape)}")
    print("species  diameter  particles  d' median  d' 10th pct  noise maximum sqrt(2 ln N)")
    for c in sorted(per_class, key=lambda k: -diam[k]):
        v = np.asarray(per_class[c])
        n_positions = float(np.prod(shape)) / diam[c] ** 3
        print(f"{c:8s} {diam[c]:8g} {len(v):10d} {np.median(v):10.2f} {np.percentile(v, 10):12.2f} "
              f"{math.sqrt(2 * math.log(n_positions)):14.2f}")


if __name__ == "__main__":
    main()
