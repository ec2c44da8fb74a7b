"""Which device runs the network: ``--device`` and ``--gpu`` resolved ('auto' -> cuda when
available, else the CPU)."""
from .errors import InputError


def resolve_device(name):
    """'auto' (or nothing): cuda when available, else cpu; a cuda device without CUDA is refused."""
    import torch
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device: {name} requested but no CUDA device is available")
    return str(name)


def device_list(device="auto", gpu=None, single=False):
    """The devices ``--device`` and ``--gpu`` name, resolved. With ``single``, the first one
    (training and classification run one network).

    Example: ``device_list("auto", ["0", "1"])`` -> ``["cuda:0", "cuda:1"]`` on a machine
    with two GPUs, ``["cpu"]`` without CUDA."""
    device = (device or "auto").strip()
    # an unfilled Scipion placeholder (a step given no GPU share) means no GPU was assigned
    gpus = [g for arg in (gpu or []) if arg != "%(GPU)s" for g in arg.replace(",", " ").split()]
    if gpus and device in ("auto", "cuda"):
        import torch
        if device == "auto" and not torch.cuda.is_available():
            devices = ["cpu"]
        else:
            bad = [g for g in gpus if not g.isdigit()]
            if bad:
                raise InputError(f"--gpu: {' '.join(bad)} is not a GPU id (0, 1, ...)")
            devices = [resolve_device(f"cuda:{g}") for g in gpus]
    else:
        devices = [resolve_device(d.strip()) for d in device.split(",") if d.strip()] or [resolve_device("auto")]
    return devices[0] if single else devices
