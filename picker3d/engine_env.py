"""The engine's own environment: how ``scipion installb picker3d`` makes it, and how
protocols find it. No Scipion import here (``picker3d.plugin`` feeds these to Scipion's
install machinery), so the commands can be read and tested on their own.

The environment ``picker3d-<version>`` holds torch (the build ``PICKER3D_TORCH`` selects),
numpy, scipy, mrcfile, starfile, scikit-learn, copick and the picker3d package: no Scipion. It is a
conda environment of that name where conda is present, else a plain venv inside the
package's folder under Scipion's software/em. Once it exists, protocols run the engine
there (``PICKER3D_ENV_ACTIVATION`` defaults to its activation command).
"""
import os
import shlex
import shutil

from .constants import COPICK_REQUIREMENTS, ENGINE_REQUIREMENTS, TORCH_VERSION

PACKAGE = "picker3d"
INSTALLED_MARKER = "engine-installed.txt"
# PyTorch's own wheel indexes, by build flavour (PICKER3D_TORCH)
TORCH_INDEX = "https://download.pytorch.org/whl/{flavour}"
TORCH_FLAVOURS = ("cpu", "cu118", "cu121", "cu124", "cu126", "cu128", "cu130")
DEFAULT_TORCH = "pypi"
TORCH_HELP = ("torch build of the engine environment: 'pypi' (default: torch %s from the package index pip "
              "uses; on Linux x86-64 PyPI's wheel carries CUDA 12 and also runs on CPUs), 'cpu' (PyTorch's "
              "CPU-only build, ~5x smaller), a CUDA flavour (%s: PyTorch's build for that CUDA), or pip "
              "arguments used as they are (e.g. 'torch==2.5.1 --index-url URL')"
              % (TORCH_VERSION, ", ".join(f for f in TORCH_FLAVOURS if f != "cpu")))


def env_name(version):
    return f"{PACKAGE}-{version}"


def torch_pip_args(choice):
    """pip arguments installing the torch build ``choice`` names (see TORCH_HELP)."""
    choice = (choice or DEFAULT_TORCH).strip()
    if choice == "pypi":
        return f"torch=={TORCH_VERSION}"
    if choice in TORCH_FLAVOURS:
        return f"torch=={TORCH_VERSION} --index-url {TORCH_INDEX.format(flavour=choice)}"
    if " " in choice or choice.startswith("torch"):
        return choice
    raise ValueError(f"{choice!r}: not a torch build picker3d knows ({TORCH_HELP})")


def package_source(version):
    """What pip installs picker3d from: this checkout when the plugin runs from one (a
    developer's or an editable install; installed editable, so the engine runs the same code
    as the plugin), else the released package of the plugin's own version (without its
    Scipion requirements)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    setup = os.path.join(root, "setup.py")
    if os.path.isfile(setup):
        with open(setup) as fh:
            if "scipion-em-picker3d" in fh.read():
                return root
    return f"scipion-em-picker3d=={version}"


def venv_python(home):
    return os.path.join(home, "venv", "bin", "python")


def install_commands(home, version, torch_choice=None, conda=None, python="python3"):
    """``[(shell command, [files it makes])]`` creating the engine environment in ``home``
    (Scipion's software/em/picker3d-<version>). ``conda``: the conda activation command (a
    conda environment is made) or None (a venv in ``home/venv`` made by ``python``)."""
    pkgs = " ".join(shlex.quote(r) for r in ENGINE_REQUIREMENTS + COPICK_REQUIREMENTS)
    source = package_source(version)
    source = f"-e {shlex.quote(source)}" if os.path.isdir(source) else shlex.quote(source)
    torch = torch_pip_args(torch_choice)
    marker = os.path.join(home, INSTALLED_MARKER)
    if conda is not None:
        name = env_name(version)
        steps = [f"conda create -y -n {name} python=3.11", f"conda activate {name}",
                 f"python -m pip install {torch}", f"python -m pip install {pkgs}",
                 f"python -m pip install --no-deps {source}"]
        if conda.strip():
            steps.insert(0, conda.rstrip("&; "))
    else:
        py = shlex.quote(venv_python(home))
        steps = [f"{shlex.quote(python)} -m venv {shlex.quote(os.path.join(home, 'venv'))}",
                 f"{py} -m pip install -q --upgrade pip", f"{py} -m pip install -q {torch}",
                 f"{py} -m pip install -q {pkgs}", f"{py} -m pip install -q --no-deps {source}"]
    # the import check: an environment that cannot run the engine is not marked installed
    check = "python" if conda is not None else shlex.quote(venv_python(home))
    steps.append(f"{check} -c 'import torch, copick, picker3d.engine.cli' && echo {shlex.quote(torch)} > {shlex.quote(marker)}")
    return [(" && ".join(steps), [marker])]


def activation_command(home, version, conda=None):
    """The shell command that activates an installed engine environment, or '' when none
    is installed in ``home`` (protocols then run the engine with Scipion's interpreter)."""
    if not os.path.isfile(os.path.join(home, INSTALLED_MARKER)):
        return ""
    if os.path.isfile(venv_python(home)):
        return f". {shlex.quote(os.path.join(home, 'venv', 'bin', 'activate'))}"
    return f"conda activate {env_name(version)}"


def conda_available(activation_cmd=""):
    """Whether conda can make the environment: Scipion's CONDA_ACTIVATION_CMD is set, or conda
    is on the PATH."""
    return bool((activation_cmd or "").strip()) or shutil.which("conda") is not None
