"""Shared set-up of the Scipion test classes: simulated tomograms in a temporary folder, a
test project, the tomograms imported with tomo's protocol, and (optionally) the first
tomogram's ground truth imported with picker3d's annotation import."""
import os
import shutil
import tempfile


def start(cls, prefix, pattern="tomo_0?.mrc", sampling=10.0, annotate=None, box=18, **simulation):
    """Fill ``cls`` with ``data`` (folder), ``tomos`` and, when ``annotate`` names a folder,
    ``coords`` imported from the ground truth of tomo_00 copied there."""
    from pyworkflow.tests import setupTestProject
    from tomo.protocols import ProtImportTomograms
    from picker3d.engine.simulate import write_simulation
    cls.cwd = os.getcwd()
    cls.data = tempfile.mkdtemp(prefix=prefix)
    write_simulation(cls.data, **dict(dict(crowders=0, vesicles=0, membranes=0, gold=0), **simulation))
    setupTestProject(cls)
    prot = cls.newProtocol(ProtImportTomograms, filesPath=cls.data, filesPattern=pattern, samplingRate=sampling)
    cls.launchProtocol(prot)
    cls.tomos = prot.Tomograms
    if annotate:
        from picker3d.protocols import ProtPicker3DImportAnnotations
        folder = os.path.join(cls.data, annotate)
        os.makedirs(folder)
        shutil.copy(os.path.join(cls.data, "tomo_00.tsv"), folder)
        imp = cls.newProtocol(ProtPicker3DImportAnnotations, inputTomograms=cls.tomos, filesPath=folder,
                              filesPattern="*.tsv", boxSize=box)
        cls.launchProtocol(imp)
        cls.coords = imp.coordinates


def end(cls):
    os.chdir(cls.cwd)
    shutil.rmtree(cls.data, ignore_errors=True)
