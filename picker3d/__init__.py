"""picker3d: deep-learning particle picking and clustering-based classification for cryo-ET.

The Scipion plugin class lives here (Scipion discovers it through the
``pyworkflow.plugin`` entry point). The science lives in ``picker3d.engine`` and does not
import Scipion, so ``import picker3d.engine`` works in a plain Python environment too:
that is why the Scipion part below is only defined when ``pwem`` is importable.
"""
import os
import shlex
import sys

from .constants import PICKER3D_ENV_ACTIVATION, PICKER3D_DEVICE, DEFAULT_DEVICE, ENGINE_MODULE

__version__ = "0.1.0"
_logo = None
_references = ["Liu2024DeepETPicker", "Moebel2021DeepFinder", "Huang2022SparsePicking",
               "Zeng2023DISCA", "Zeng2020GumNet"]

try:
    import pwem
except ImportError:  # engine-only environment (e.g. the one PICKER3D_ENV_ACTIVATION selects)
    pwem = None


if pwem is not None:
    class Plugin(pwem.Plugin):
        _url = "https://github.com/picker3d/scipion-em-picker3d"
        _supportedVersions = [__version__]

        @classmethod
        def _defineVariables(cls):
            cls._defineVar(PICKER3D_ENV_ACTIVATION, "",
                           description="Shell command that activates the Python environment running the "
                                       "picker3d engine (e.g. 'conda activate picker3d'). Empty: the "
                                       "interpreter that runs Scipion.")
            cls._defineVar(PICKER3D_DEVICE, DEFAULT_DEVICE,
                           description="Default compute device for training and picking: auto, cpu or cuda.")

        @classmethod
        def getEnviron(cls):
            """Environment for engine jobs: threads follow Scipion's, Python output unbuffered."""
            env = pwem.pwutils.Environ(os.environ)
            env.update({"PYTHONUNBUFFERED": "1"})
            return env

        @classmethod
        def getDevice(cls):
            return cls.getVar(PICKER3D_DEVICE) or DEFAULT_DEVICE

        @classmethod
        def getEngineProgram(cls):
            """Program part of the engine command line, for ``protocol.runJob(program, args)``.

            With PICKER3D_ENV_ACTIVATION set, the environment is activated first (conda's
            activation command is prepended, as scipion-em-deepfinder does); otherwise the
            current interpreter runs ``-m picker3d``.
            """
            activation = (cls.getVar(PICKER3D_ENV_ACTIVATION) or "").strip()
            if activation:
                return f"{cls.getCondaActivationCmd()} {activation} && python -m {ENGINE_MODULE}"
            return f"{shlex.quote(sys.executable)} -m {ENGINE_MODULE}"

        @classmethod
        def getEngineCommand(cls, subcommand, args=""):
            """``(program, arguments)`` for ``runJob``; ``args`` may hold ``%(GPU)s``-style keys."""
            return cls.getEngineProgram(), f"{subcommand} {args}".strip()

        @classmethod
        def defineBinaries(cls, env):
            # The engine is this Python package itself: nothing to download or build.
            pass
