"""Scipion integration: plugin discovery and a real project that imports a simulated tomogram."""
import importlib
import os

import pytest

pytestmark = pytest.mark.scipion


def test_plugin_is_importable_and_discovered():
    # import directly first: Scipion's discovery swallows import errors, this does not
    mod = importlib.import_module("picker3d")
    importlib.import_module("picker3d.protocols")
    assert hasattr(mod, "Plugin")
    from pyworkflow.plugin import Domain
    plugin = Domain.getPlugin("picker3d")
    assert plugin is not None and plugin.__name__ == "picker3d"
    assert "picker3d" in Domain.getPlugins()


def test_engine_command_line_for_runjob(monkeypatch):
    import sys

    from picker3d import Plugin
    from picker3d.constants import PICKER3D_ENV_ACTIVATION
    Plugin._vars[PICKER3D_ENV_ACTIVATION] = ""
    prog, args = Plugin.getEngineCommand("pick", "--device cuda:%(GPU)s")
    assert prog.endswith("-m picker3d") and sys.executable in prog and args == "pick --device cuda:%(GPU)s"
    Plugin._vars[PICKER3D_ENV_ACTIVATION] = "conda activate picker3d"
    try:
        prog, _ = Plugin.getEngineCommand("pick")
        assert "conda activate picker3d && python -m picker3d" in prog
    finally:
        Plugin._vars[PICKER3D_ENV_ACTIVATION] = ""
    assert Plugin.getDevice() in ("auto", "cpu", "cuda")


class TestImportSimulatedTomogram:
    """A real Scipion project: tomo's import protocol on a tomogram the package simulated."""

    def test_import_tomograms(self, small_sim):
        from pyworkflow.tests import BaseTest, setupTestProject
        from tomo.protocols import ProtImportTomograms

        class TestPicker3DBootstrap(BaseTest):
            pass

        out, man = small_sim
        cwd = os.getcwd()
        try:
            setupTestProject(TestPicker3DBootstrap)
            prot = TestPicker3DBootstrap.newProtocol(ProtImportTomograms, filesPath=str(out),
                                                     filesPattern="tomo_??.mrc", samplingRate=10.0)
            TestPicker3DBootstrap.launchProtocol(prot)
            # set paths are relative to the project folder: read them from there
            tomos = getattr(prot, "Tomograms", None)
            assert tomos is not None, "ProtImportTomograms produced no output"
            assert tomos.getSize() == 1
            assert abs(tomos.getSamplingRate() - 10.0) < 1e-6
            tomo = tomos.getFirstItem()
            assert tomo.getDimensions() == (96, 96, 64)   # Scipion reports x, y, z
            assert tomo.getTsId() == "tomo_00"
        finally:
            os.chdir(cwd)
