"""The model file: weights and metadata in one torch file, the metadata again as JSON beside it.

Saving writes both atomically (the JSON after the weights); :mod:`picker3d.engine.modelinfo`
reads the JSON without torch.
"""
import os

import torch

from .errors import InputError
from .fileio import atomic_write
from .modelinfo import MODEL_FORMAT, MODEL_VERSION, check_format, write_sidecar
from .network import build_network


def save_model(path, model, meta):
    """Write ``path`` (weights, architecture and ``meta``) and its JSON sidecar."""
    record = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "arch": model.config, **meta}
    with atomic_write(path, ".pt") as tmp:
        torch.save(dict(record, state_dict=model.state_dict()), tmp)
    write_sidecar(path, record)


def load_model(path, device="cpu", voxel_size=None, warn=print):
    """Load a model file; returns ``(model, meta)``. Warns on a voxel-size mismatch."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: model file not found")
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable picker3d model ({exc.__class__.__name__})") from exc
    check_format(ck, path, "model file", path)
    model = build_network(ck["arch"])
    model.load_state_dict(ck["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in ck.items() if k not in ("state_dict",)}
    if voxel_size and meta.get("voxel_size") and abs(voxel_size - meta["voxel_size"]) / meta["voxel_size"] > 0.05:
        warn(f"warning: {path} was trained at {meta['voxel_size']:.2f} Å/voxel, the tomogram has "
             f"{voxel_size:.2f} Å/voxel: bin or rescale the tomogram for best results")
    return model, meta


def describe_model(path):
    """(Re)write the JSON sidecar of an existing model file (older files have none)."""
    _, meta = load_model(path, warn=lambda *_: None)
    return write_sidecar(path, meta)
