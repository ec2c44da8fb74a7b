"""The engine environment ``scipion installb picker3d`` makes (torch, the engine's
requirements, copick, picker3d; no Scipion), made once and shared by the tests that run the
engine there."""
import os
import subprocess
import sys


def installed_engine_env(cwd):
    """``(python, activation script)`` of the installed engine environment, installing it
    (or reinstalling one made before it held copick) through Scipion's own install path."""
    import pwem

    from picker3d import __version__
    from picker3d.engine_env import INSTALLED_MARKER, env_name, venv_python
    home = os.path.join(pwem.Config.EM_ROOT, env_name(__version__))
    python, marker = venv_python(home), os.path.join(home, INSTALLED_MARKER)
    clean = {"PATH": os.environ["PATH"]}
    if os.path.isfile(marker) and subprocess.run([python, "-c", "import copick"], env=clean,
                                                 capture_output=True).returncode != 0:
        os.remove(marker)        # made by an older picker3d, without copick
    if not os.path.isfile(marker):
        env = dict(os.environ)
        env.pop("PICKER3D_ENV_ACTIVATION", None)
        r = subprocess.run([sys.executable, "-m", "scipion", "installb", "picker3d"], env=env, capture_output=True,
                           text=True, timeout=1800, cwd=str(cwd))
        assert os.path.isfile(marker), r.stdout[-3000:] + r.stderr[-3000:]
    return python, os.path.join(home, "venv", "bin", "activate")
