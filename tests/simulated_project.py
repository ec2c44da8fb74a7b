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

    from picker3d.engine.simulation.dataset import write_simulation
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


def train_tiny_model(cls, epochs=4):
    """``cls.model_file``: a one-class (barrel, 17 voxels) model trained in seconds on tomo_00."""
    import torch

    from picker3d.engine.formats.mrc import read_volume
    from picker3d.engine.formats.readers import read_table
    from picker3d.engine.training import train
    torch.set_num_threads(2)
    vol, _ = read_volume(os.path.join(cls.data, "tomo_00.mrc"))
    tab = read_table(os.path.join(cls.data, "tomo_00.tsv"))
    cls.model_file = os.path.join(cls.data, "model.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, cls.model_file, [vol], [tab], epochs=epochs, iters_per_epoch=10,
          patch=32, batch=2, tile=64, pad=8, seed=0, lr=5e-3, log=lambda m: None, bin=1)
