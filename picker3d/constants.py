"""Names shared by the Scipion layer (no heavy imports here)."""
# Plugin variables (scipion.conf or environment)
PICKER3D_ENV_ACTIVATION = "PICKER3D_ENV_ACTIVATION"   # e.g. "conda activate picker3d"; empty = this Python
PICKER3D_DEVICE = "PICKER3D_DEVICE"                   # auto | cpu | cuda
DEFAULT_DEVICE = "auto"
ENGINE_MODULE = "picker3d"                            # run as ``python -m picker3d``
