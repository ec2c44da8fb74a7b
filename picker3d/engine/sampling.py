"""Which voxel size a tomogram has and how tomograms at different ones are brought to one:
``--voxel-size``, else the MRC header's (0 or 1 Å in a header is no voxel size), else the
model's; tomograms more than 2 % apart are resampled (:func:`picker3d.engine.volume.resample`)."""
from .errors import InputError
from .formats.mrc import usable_voxel_size

# tomograms whose voxel sizes differ by more than this fraction are resampled to one
SAMPLING_TOLERANCE = 0.02


def given_voxel_size(value):
    """--voxel-size as given (None when not), refused unless positive."""
    if value is not None and not value > 0:
        raise InputError(f"--voxel-size: {value:g} must be a positive number of Å")
    return None if value is None else float(value)


def training_voxel_sizes(names, header_sizes, given):
    """Each training / validation tomogram's voxel size: ``given``, else its header's (a header
    without one: a one-line error asks for --voxel-size)."""
    if given_voxel_size(given) is not None:
        return [float(given)] * len(names)
    for path, v in zip(names, header_sizes):
        if not usable_voxel_size(v):
            raise InputError(f"{path}: voxel size is {v or 0:g} Å in the MRC header; give --voxel-size (or set it, "
                             f"e.g. 'alterheader -del' in IMOD) so the model records its sampling")
    return [float(v) for v in header_sizes]


def same_sampling(names, volumes, tables, sizes, n_train, log=print):
    """Every tomogram at the first one's voxel size (resampled, its table scaled) when they
    differ by more than 2 %; returns (train volumes, train tables, val volumes, val tables)."""
    from .volume import resample
    target = sizes[0]
    for i, (name, v) in enumerate(zip(names, sizes)):
        if abs(v - target) / target > SAMPLING_TOLERANCE:
            log(f"{name}: {v:g} Å/voxel: resampled to {target:g} Å/voxel, the first tomogram's (the diameters "
                f"are in its voxels)")
            volumes[i] = resample(volumes[i], v, target)
            tables[i] = tables[i].scaled(v / target)
    return volumes[:n_train], tables[:n_train], volumes[n_train:], tables[n_train:]


def picking_voxel_size(path, header, given, meta, log=print):
    """The voxel size picking uses: ``given`` (--voxel-size), else a usable header's, else the
    model's (said in the log), else a one-line error asking for --voxel-size."""
    if given is not None:
        return float(given)
    if usable_voxel_size(header):
        return float(header)
    if meta.get("voxel_size"):
        log(f"{path}: no voxel size in the header ({header or 0:g} Å): taken as the model's, "
            f"{meta['voxel_size']:g} Å (--voxel-size gives it)")
        return float(meta["voxel_size"])
    raise InputError(f"{path}: the header has no usable voxel size ({header or 0:g} Å) and the model records "
                     f"none: give --voxel-size")


def differs(voxel_size, model_voxel_size):
    """True when a tomogram at ``voxel_size`` is resampled for a model at ``model_voxel_size``."""
    return bool(model_voxel_size) and abs(voxel_size - model_voxel_size) / model_voxel_size > SAMPLING_TOLERANCE
