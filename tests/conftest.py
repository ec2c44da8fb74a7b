"""Test session setup: a Scipion configuration inside the checkout, never in $HOME.

pyworkflow reads its configuration when it is first imported, so the variables are
set here, before any test module imports Scipion.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCIPION_HOME = os.environ.setdefault("SCIPION_HOME", os.path.join(ROOT, ".scipion"))
os.environ.setdefault("SCIPION_USER_DATA", os.path.join(SCIPION_HOME, "data"))
os.environ.setdefault("SCIPION_DOMAIN", "pwem")
os.environ.setdefault("SCIPION_PYTHON", sys.executable)
os.environ.setdefault("SCIPION_TESTS", os.path.join(SCIPION_HOME, "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

if not os.path.exists(os.path.join(SCIPION_HOME, "config", "scipion.conf")):
    os.makedirs(SCIPION_HOME, exist_ok=True)
    subprocess.run([sys.executable, "-c", "import sys; from scipion.__main__ import main; "
                    "sys.argv=['scipion','config','--unattended']; main()"], check=True,
                   stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory):
    """One small simulated tomogram (64x96x96, high SNR, all species) written to disk."""
    from picker3d.engine.simulation.dataset import write_simulation
    out = tmp_path_factory.mktemp("sim")
    man = write_simulation(str(out), n_tomograms=1, seed=3, shape=(64, 96, 96), snr=1.0,
                           crowders=4, vesicles=0, membranes=0, gold=1)
    return out, man


@pytest.fixture
def rng():
    return np.random.default_rng(0)
