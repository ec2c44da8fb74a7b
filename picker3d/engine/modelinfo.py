"""What a model file says about itself, readable without torch.

``picker3d train`` writes the model file (``model.pt``, torch) and, beside it, its metadata
as JSON (``model.pt.json``: classes, diameters, voxel size, binning, thresholds, training
history, architecture). The Scipion layer, its viewers and a GUI read the JSON only, so a
Scipion process needs no torch and opens a viewer without paying torch's import time.
The sidecar is written after the model file, both atomically, and records the model file's
size and modification time: a sidecar that does not describe the file beside it is refused.
"""
import json
import os

from .errors import InputError
from .fileio import atomic_text

MODEL_FORMAT = "picker3d-model"
MODEL_VERSION = 1
SIDECAR_SUFFIX = ".json"


def sidecar_path(model_path):
    return os.fspath(model_path) + SIDECAR_SUFFIX


def _fingerprint(model_path):
    st = os.stat(model_path)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _jsonable(value):
    """Numbers and containers as JSON has them (numpy scalars, tuples)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_sidecar(model_path, meta):
    """Write ``model_path``'s JSON sidecar from its metadata (everything but the weights)."""
    info = _jsonable({k: v for k, v in meta.items() if k != "state_dict"})
    info["format"] = MODEL_FORMAT
    info.setdefault("version", MODEL_VERSION)
    info["model_file"] = dict(name=os.path.basename(model_path), **_fingerprint(model_path))
    return atomic_text(sidecar_path(model_path), json.dumps(info, indent=1, allow_nan=True) + "\n")


def check_format(record, name, what, model_path):
    """InputError unless ``record`` (a model file's dictionary or its sidecar's) is a picker3d
    model of a format version this picker3d reads; ``name`` is the file named as not one."""
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise InputError(f"{name}: not a picker3d {what}")
    if record.get("version", 0) > MODEL_VERSION:
        raise InputError(f"{model_path}: model format version {record['version']} is newer than this picker3d "
                         f"({MODEL_VERSION}); update picker3d")


def read_model_info(model_path):
    """The metadata of a model file, from its JSON sidecar (no torch). InputError naming the
    file when the model or its sidecar is missing, unreadable or describes another file."""
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise InputError(f"{model_path}: model file not found")
    side = sidecar_path(model_path)
    if not os.path.isfile(side):
        raise InputError(f"{model_path}: no metadata file {os.path.basename(side)} beside it (written by picker3d "
                         f"0.1 train): run 'picker3d model-info --model {model_path} --write' in the engine environment")
    try:
        with open(side) as fh:
            info = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"{side}: not a readable picker3d model metadata file ({exc.__class__.__name__})") from None
    check_format(info, side, "model metadata file", model_path)
    recorded = info.get("model_file") or {}
    if recorded.get("size") is not None and recorded["size"] != os.path.getsize(model_path):
        raise InputError(f"{side}: describes another model file ({recorded['size']} bytes, {model_path} has "
                         f"{os.path.getsize(model_path)}): run 'picker3d model-info --model {model_path} --write'")
    return info


def kept_entry(history):
    """The history entry of the epoch training keeps: the best validation F1, the later of
    equals (``train`` replaces its best state on ties); None without validation F1."""
    key = "val_f1" if any("val_f1" in h for h in history) else "val_recall"
    scored = [h for h in history if key in h]
    return max(reversed(scored), key=lambda h: h[key]) if scored else None


def kept_summary(history, thresholds, last=False):
    """One line saying which epoch the model file keeps and the thresholds picking will use
    (``last``: the last epoch is kept whatever the validation says)."""
    best = None if last else kept_entry(history)
    if best is None:
        text = f"kept the last epoch ({len(history)}; no validation to choose by)"
    elif "val_f1" in best:
        text = (f"kept epoch {best['epoch']} of {len(history)}: validation F1 {best['val_f1']:.3f}, "
                f"class F1 {best['val_class_f1']:.3f}")
    else:
        text = (f"kept epoch {best['epoch']} of {len(history)}: {best['val_recall']:.3f} of the annotated "
                f"validation particles found at the expected count")
    if thresholds:
        per_class = ", ".join(f"{c} {v:g}" for c, v in thresholds["class"].items())
        text += f"; thresholds t_seg {thresholds['t_seg']:g}, score {per_class}"
    return text
