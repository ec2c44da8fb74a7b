"""Same seed, epoch-based training in the checkout on PYTHONPATH: prints a hash of the model
weights, the history, the thresholds and the picks of a test tomogram, so two checkouts
(before and after a restructuring) can be compared line by line; picker3d before 0.2's
module layout (engine.train, engine.simulate, engine.coords, engine.pick) is read as well.

Usage: PYTHONPATH=/path/to/checkout python benchmarks/same_training.py
"""
import hashlib, json, sys, tempfile, os
import numpy as np, torch
torch.set_num_threads(2)
import picker3d
try:
    from picker3d.engine.training import train
    from picker3d.engine.simulation.dataset import simulate_tomogram
    from picker3d.engine.formats.table import CoordTable
    from picker3d.engine.picking.tomogram import pick_tomogram
except ImportError:
    from picker3d.engine.train import train
    from picker3d.engine.simulate import simulate_tomogram
    from picker3d.engine.coords import CoordTable
    from picker3d.engine.pick import pick_tomogram
from picker3d.engine.modelfile import load_model
print(picker3d.__file__)
sims = [simulate_tomogram(shape=(48, 96, 96), seed=s, snr=0.5, species=["large", "barrel"], counts={"large": 4, "barrel": 5}) for s in (1, 2, 3)]
tabs = [CoordTable.from_rows(s["rows"]) for s in sims]
out = os.path.join(tempfile.mkdtemp(), "m.pt")
train([sims[0]["tomogram"]], [tabs[0]], ["large", "barrel"], {"large": 25, "barrel": 17}, out,
      [sims[1]["tomogram"]], [tabs[1]], epochs=3, iters_per_epoch=6, bin=2, seed=5, log=lambda m: None,
      precision="fp32", **({"bin_phases": True} if len(sys.argv) < 2 else {}))
model, meta = load_model(out)
h = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()[:16]
table, _ = pick_tomogram(model, meta, sims[2]["tomogram"], precision="fp32")
print("weights", h, "history", [round(e["loss"], 6) for e in meta["history"]], [e.get("val_f1") for e in meta["history"]])
print("thresholds", json.dumps(meta["thresholds"]), "picks", len(table), np.round(table.xyz[:3], 3).tolist())
print("meta keys", sorted(k for k in meta if k not in ("versions",)))
