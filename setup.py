"""scipion-em-picker3d: deep-learning particle picking and classification for cryo-ET in Scipion."""
import os

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
with open(os.path.join(here, "README.md"), encoding="utf-8") as fh:
    long_description = fh.read()


def version():
    with open(os.path.join(here, "picker3d", "_version.py")) as fh:
        for line in fh:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__")


setup(
    name="scipion-em-picker3d",
    version=version(),
    description="Deep-learning 3D particle picking and clustering-based classification for cryo-ET, as a Scipion plugin",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="GPLv3",
    python_requires=">=3.9",
    packages=find_packages(include=["picker3d", "picker3d.*"]),
    package_data={"picker3d": ["protocols.conf"]},
    include_package_data=True,
    # what the engine needs; Scipion's packages are the 'scipion' extra (Scipion's own
    # environment has them), so the engine environment, which holds no Scipion, passes pip check
    install_requires=[
        "numpy",
        "scipy",
        "mrcfile",
        "starfile",        # RELION star files (pandas-based, as RELION 5 writes them)
        "scikit-learn",    # PCA / Gaussian mixtures for classification
    ],
    # torch is the engine's: in a Scipion installation the engine runs in an environment of
    # its own ('scipion installb picker3d', picker3d/engine_env.py), so Scipion's never gets
    # it; one environment for both (the README's two commands) installs the 'engine' extra.
    # The hand-off tests feed picker3d's sets to the converters of the downstream plugins.
    # copick (CZ cryo-ET data portal projects) needs numpy >= 2 and newer mrcfile than Scipion
    # pins: it belongs in the engine environment only ('.[engine,copick]')
    extras_require={"scipion": ["scipion-pyworkflow>=3.0", "scipion-em>=3.0", "scipion-em-tomo>=3.0"],
                    "engine": ["torch>=2.1"],
                    "copick": ["copick>=1.31", "zarr<3"],      # = constants.COPICK_REQUIREMENTS
                    "test": ["pytest", "ruff==0.17.6", "scipion-em-reliontomo", "scipion-em-dynamo"]},
    entry_points={
        "pyworkflow.plugin": "picker3d = picker3d",
        "console_scripts": ["picker3d = picker3d.engine.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
)
