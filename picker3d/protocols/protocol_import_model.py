"""Import a model file written by ``picker3d train`` (command line or another project)."""
import os
import shutil
from enum import Enum

import pyworkflow.protocol.params as params
from pwem.protocols import ProtImport

from ..objects import Picker3DModel
from .protocol_base import ProtPicker3DBase


class ImportModelOutputs(Enum):
    model = Picker3DModel


class ProtPicker3DImportModel(ProtImport, ProtPicker3DBase):
    """Import a picker3d model file. The file is copied into the project (the original is
    left untouched) and its metadata (classes, diameters, sampling, thresholds) is read
    from the file itself."""
    _label = "import model"
    _possibleOutputs = ImportModelOutputs

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("modelFile", params.FileParam, important=True, label="Model file",
                      help="A .pt file written by 'picker3d train' or picker3d's train protocol.")
        form.addParam("samplingRate", params.FloatParam, default=0.0, label="Sampling rate (Å/px)",
                      help="Pixel size the model was trained at; 0 = the one stored in the file.")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, needsGPU=False)

    def importStep(self):
        from ..engine.train import load_model
        src = self.modelFile.get()
        _, meta = load_model(src)   # refuses files that are not picker3d models, by name
        dst = self._getExtraPath(os.path.basename(src))
        shutil.copy2(src, dst)
        model = Picker3DModel(filename=dst)
        model.setFromMeta(meta)
        if self.samplingRate.get():
            model.setSamplingRate(self.samplingRate.get())
        self._defineOutputs(**{self._possibleOutputs.model.name: model})

    def _validate(self):
        path = self.modelFile.get()
        if not path or not os.path.isfile(path):
            return [f"Model file '{path}' not found."]
        return []

    def _summary(self):
        out = getattr(self, self._possibleOutputs.model.name, None)
        return [f"Imported {out}" if out is not None else "Output not ready yet."]
