"""Import a model file written by ``picker3d train`` (command line or another project)."""
import os
import shutil
from enum import Enum

import pyworkflow.protocol.params as params
from pwem.protocols import ProtImport

from ..engine.modelinfo import read_model_info
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
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _copiedFile(self):
        return self._getExtraPath(os.path.basename(self.modelFile.get()))

    def importStep(self):
        """Copy the file and describe it: the engine (in its own environment, with torch)
        checks that it is a picker3d model and writes its metadata as JSON beside the copy,
        so files written before the JSON sidecar existed import too."""
        shutil.copy2(self.modelFile.get(), self._copiedFile())
        self.runEngine("model-info", f"--model {self._quote(self._copiedFile())} --write")

    def createOutputStep(self):
        dst = self._copiedFile()
        model = Picker3DModel(filename=dst)
        model.setFromMeta(read_model_info(dst))
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
