"""Names shared by the Scipion layer and the install path (no heavy imports here)."""
# Plugin variables (scipion.conf or environment)
PICKER3D_ENV_ACTIVATION = "PICKER3D_ENV_ACTIVATION"   # shell command activating the engine environment
PICKER3D_DEVICE = "PICKER3D_DEVICE"                   # auto | cpu | cuda
PICKER3D_TORCH = "PICKER3D_TORCH"                     # torch build of the engine environment (engine_env.py)
DEFAULT_DEVICE = "auto"
ENGINE_MODULE = "picker3d"                            # run as ``python -m picker3d``

# What the engine environment holds besides torch and picker3d itself (setup.py's engine
# extra adds torch to the plugin's own requirements, which hold these too)
ENGINE_REQUIREMENTS = ["numpy", "scipy", "mrcfile", "starfile", "scikit-learn"]
# copick (copick projects; the import / export protocols run it in the engine environment):
# numpy >= 2 and a newer mrcfile than Scipion's environment has, so never installed there
COPICK_REQUIREMENTS = ["copick>=1.31", "zarr<3"]
TORCH_VERSION = "2.13.0"
