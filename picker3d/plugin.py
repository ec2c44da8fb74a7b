"""The Scipion plugin class (``picker3d.Plugin``): variables, the engine command line, and
the engine environment that ``scipion installb picker3d`` makes (:mod:`picker3d.engine_env`).
"""
import os
import shlex
import sys

import pwem

from ._version import __version__
from .constants import DEFAULT_DEVICE, ENGINE_MODULE, PICKER3D_DEVICE, PICKER3D_ENV_ACTIVATION, PICKER3D_TORCH
from .engine_env import (
    DEFAULT_TORCH,
    PACKAGE,
    TORCH_HELP,
    activation_command,
    conda_available,
    env_name,
    install_commands,
)


class Plugin(pwem.Plugin):
    # Scipion finds a plugin's package (its path, devel mode, label) from the Plugin class's
    # module: it is picker3d's, which re-exports it (picker3d/__init__.py)
    __module__ = "picker3d"
    _url = "https://github.com/picker3d/scipion-em-picker3d"
    _supportedVersions = [__version__]

    @classmethod
    def engineHome(cls):
        """software/em/picker3d-<version>: where the engine environment (its venv, or the
        marker of its conda environment) lives."""
        return os.path.join(pwem.Config.EM_ROOT, env_name(__version__))

    @classmethod
    def _defineVariables(cls):
        conda = pwem.Config.CONDA_ACTIVATION_CMD if hasattr(pwem.Config, "CONDA_ACTIVATION_CMD") else ""
        cls._defineVar(PICKER3D_ENV_ACTIVATION, activation_command(cls.engineHome(), __version__, conda),
                       description="Shell command that activates the Python environment running the "
                                   "picker3d engine. Default: the environment 'scipion installb picker3d' "
                                   "made, once it exists; empty: the interpreter that runs Scipion.")
        cls._defineVar(PICKER3D_DEVICE, DEFAULT_DEVICE,
                       description="Default compute device for training and picking: auto, cpu or cuda.")
        cls._defineVar(PICKER3D_TORCH, DEFAULT_TORCH, description=TORCH_HELP.capitalize() + ".")

    @classmethod
    def getEnviron(cls):
        """Environment for engine jobs: Python output unbuffered; in an engine environment of
        its own, none of Scipion's PYTHONPATH (its packages are not the engine's)."""
        env = pwem.pwutils.Environ(os.environ)
        env.update({"PYTHONUNBUFFERED": "1"})
        if cls.getActivation():
            env.pop("PYTHONPATH", None)
        return env

    @classmethod
    def getActivation(cls):
        return (cls.getVar(PICKER3D_ENV_ACTIVATION) or "").strip()

    @classmethod
    def getDevice(cls):
        return cls.getVar(PICKER3D_DEVICE) or DEFAULT_DEVICE

    @classmethod
    def getEngineProgram(cls):
        """Program part of the engine command line, for ``protocol.runJob(program, args)``.

        With an engine environment, its activation comes first (conda's activation command
        before a ``conda activate``, as scipion-em-deepfinder does); otherwise the current
        interpreter runs ``-m picker3d``.
        """
        activation = cls.getActivation()
        if activation:
            if activation.startswith("conda activate"):
                activation = f"{cls.getCondaActivationCmd()} {activation}"
            return f"{activation} && python -m {ENGINE_MODULE}"
        return f"{shlex.quote(sys.executable)} -m {ENGINE_MODULE}"

    @classmethod
    def getEngineCommand(cls, subcommand, args=""):
        """``(program, arguments)`` for ``runJob``; ``args`` may hold ``%(GPU)s``-style keys."""
        return cls.getEngineProgram(), f"{subcommand} {args}".strip()

    @classmethod
    def defineBinaries(cls, env):
        """``scipion installb picker3d``: the engine environment picker3d-<version> (conda where
        conda is present, else a venv with Scipion's Python), torch as PICKER3D_TORCH says."""
        conda_cmd = pwem.Config.CONDA_ACTIVATION_CMD if hasattr(pwem.Config, "CONDA_ACTIVATION_CMD") else ""
        use_conda = conda_available(conda_cmd) and os.environ.get("PICKER3D_ENV_KIND", "") != "venv"
        commands = install_commands(cls.engineHome(), __version__, os.environ.get(PICKER3D_TORCH) or
                                    cls.getVar(PICKER3D_TORCH, DEFAULT_TORCH),
                                    conda=(conda_cmd or "") if use_conda else None, python=sys.executable)
        env.addPackage(PACKAGE, version=__version__, tar="void.tgz", commands=commands,
                       neededProgs=[], default=True)
