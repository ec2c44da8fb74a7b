"""GPU benchmark: training and picking figures on one device, CPU or CUDA.

Simulates the benchmark set (tomograms 100 train, 101 validation, 102 test, as
bench_picking.py), trains for a fixed budget at each binning asked for (default: bin 1 and
bin 2, the CPU default), and for each model prints one JSON line: epochs and iterations per
minute, patches per second, validation F1 and the test tomogram's F1 / mean class F1, peak
GPU memory and the precision used. Then picks one large tomogram (default 200x512x512) end
to end through the command line (``picker3d pick``: file read, network, post-processing,
table written) and prints its seconds and voxels per second (the first, warm-up run, with
CUDA initialisation and kernel selection, is printed apart).

Run it on the CPU first to test the script itself (small shapes keep it short):
    python benchmarks/bench_gpu.py --device cpu --minutes 0.5 --shape 48 96 96 --big-shape 64 128 128
On a GPU (the figures README and the closing note quote):
    python benchmarks/bench_gpu.py --device cuda --minutes 3

Training throughput is compared between devices in patches per second at the same patch,
batch and precision: give ``--patch`` and ``--batch`` explicitly when comparing, so the
automatic choices (which depend on the device) do not differ.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from picker3d.engine.cli import main as cli
from picker3d.engine.formats.mrc import write_volume
from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.table import CoordTable
from picker3d.engine.metrics import evaluate
from picker3d.engine.modelfile import load_model
from picker3d.engine.picking.tomogram import pick_tomogram
from picker3d.engine.simulation.dataset import simulate_tomogram
from picker3d.engine.training import train


def peak_memory_mb(device):
    if str(device).startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return None


def reset_peak(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def bench_training(a, sims, tabs, diam, binning, folder):
    classes = list(diam)
    out = os.path.join(folder, f"bin{binning}.pt")
    reset_peak(a.device)
    t0 = time.time()
    train([sims[0]["tomogram"]], [tabs[0]], classes, diam, out, [sims[1]["tomogram"]], [tabs[1]],
          epochs=10 ** 6, minutes=a.minutes, iters_per_epoch=a.iters, patch=a.patch, batch=a.batch,
          seed=a.seed, bin=binning, flips=a.flips, device=a.device, precision=a.precision,
          log=lambda m: print("  " + m, flush=True))
    wall = time.time() - t0
    train_peak = peak_memory_mb(a.device)
    model, meta = load_model(out, device=a.device)
    history = meta["history"]
    train_s = sum(h["train_s"] for h in history)      # network steps only, validation left out
    iters = len(history) * a.iters
    patches = iters * int(meta["batch"])
    reset_peak(a.device)
    t0 = time.time()
    picked, _ = pick_tomogram(model, meta, sims[2]["tomogram"], device=a.device, precision=a.precision)
    pick_s = time.time() - t0
    r = evaluate(picked, tabs[2], diam)
    return out, {
        "device": a.device, "bin": binning, "patch": meta["patch"], "batch": meta["batch"],
        "precision": meta["precision"], "minutes": a.minutes, "wall_s": round(wall, 1),
        "epochs": len(history), "epochs_per_min": round(len(history) / (wall / 60), 2),
        "iterations_per_min": round(iters / (wall / 60), 1),
        "patches_per_s_train_steps": round(patches / max(train_s, 1e-9), 2),
        "best_val_f1": None if meta.get("best_val_f1") is None else round(meta["best_val_f1"], 3),
        "test_f1": round(r["f1"], 3), "test_mean_class_f1": round(r["mean_class_f1"], 3),
        "test_pick_s": round(pick_s, 2), "peak_gpu_mb_training": train_peak,
        "peak_gpu_mb_picking": peak_memory_mb(a.device)}


def bench_picking_end_to_end(a, model_path, folder):
    big = simulate_tomogram(shape=tuple(a.big_shape), seed=103, snr=a.snr)
    tomo = os.path.join(folder, "big.mrc")
    write_volume(tomo, big["tomogram"], float(big["manifest"].get("voxel_size_A", 10.0)))
    del big["tomogram"]
    ref = CoordTable.from_rows(big["rows"])
    out_dir = os.path.join(folder, "picks")
    args = ["pick", "--model", model_path, "--tomograms", tomo, "--out-dir", out_dir, "--device", a.device,
            "--precision", a.precision]
    rows = []
    for run in ("warm-up", "measured"):
        reset_peak(a.device)
        t0 = time.time()
        cli(args)
        seconds = time.time() - t0
        table = read_table(os.path.join(out_dir, "big.tsv"), allow_empty=True)
        diam = {k: v["diameter_vox"] for k, v in big["manifest"]["species"].items()}
        r = evaluate(table, ref, diam)
        rows.append({"run": run, "shape": list(a.big_shape), "device": a.device, "seconds_end_to_end": round(seconds, 2),
                     "mvox_per_s": round(float(np.prod(a.big_shape)) / seconds / 1e6, 2), "particles": len(table),
                     "f1": round(r["f1"], 3), "peak_gpu_mb": peak_memory_mb(a.device),
                     "model": os.path.basename(model_path)})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per binning (default 3)")
    p.add_argument("--bins", default="1,2", help="binnings to train at (default 1,2)")
    p.add_argument("--iters", type=int, default=30, help="iterations per epoch (default 30)")
    p.add_argument("--patch", type=int, default=None, help="training patch (default: the automatic choice)")
    p.add_argument("--batch", type=int, default=None, help="patches per step (default: the automatic choice)")
    p.add_argument("--flips", type=int, default=2, help="test-time flips (default 2)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="default auto")
    p.add_argument("--shape", type=int, nargs=3, default=[96, 256, 256], help="training/validation/test shape")
    p.add_argument("--big-shape", type=int, nargs=3, default=[200, 512, 512], help="tomogram picked end to end")
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: --device cuda but torch sees no CUDA device (use --device cpu to test the script)")
    if a.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    sims = [simulate_tomogram(shape=tuple(a.shape), seed=s, snr=a.snr) for s in (100, 101, 102)]
    tabs = [CoordTable.from_rows(s["rows"]) for s in sims]
    diam = {k: v["diameter_vox"] for k, v in sims[0]["manifest"]["species"].items()}
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    print(json.dumps({"device_name": name, "torch": torch.__version__, "shape": a.shape, "species": diam}), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        models = {}
        for binning in [int(b) for b in a.bins.split(",")]:
            path, res = bench_training(a, sims, tabs, diam, binning, folder)
            models[binning] = (path, res["test_f1"])
            print(json.dumps({"training": res}), flush=True)
        best_bin = max(models, key=lambda b: models[b][1])
        for row in bench_picking_end_to_end(a, models[best_bin][0], folder):
            print(json.dumps({"picking_end_to_end": row}), flush=True)


if __name__ == "__main__":
    main()
