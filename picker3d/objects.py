"""Scipion objects of the plugin: the trained picker model.

A ``Picker3DModel`` points at a model file written by ``picker3d train`` and mirrors the
metadata that the file describes about itself (class names, diameters, voxel size,
binning, calibrated thresholds), so protocols and the GUI can show and validate it
without loading torch.
"""
import json

import pyworkflow.object as pwobj
from pwem.objects import EMFile


class Picker3DModel(EMFile):
    """A trained picker3d 3D-ResUNet (model file + what it was trained for)."""

    def __init__(self, filename=None, **kwargs):
        EMFile.__init__(self, filename=filename, **kwargs)
        self._classNames = pwobj.String()      # JSON list, in the network's output order
        self._diameters = pwobj.String()       # JSON {class: diameter in voxels at the model's sampling}
        self._samplingRate = pwobj.Float()     # Å/voxel of the training tomograms (before binning)
        self._binning = pwobj.Integer(1)
        self._thresholds = pwobj.String()      # JSON of the calibrated thresholds, or empty
        self._bestValF1 = pwobj.Float()

    # ---- class names and diameters ---------------------------------------------------
    def getClassNames(self):
        return json.loads(self._classNames.get() or "[]")

    def setClassNames(self, names):
        self._classNames.set(json.dumps(list(names)))

    def getDiameters(self):
        """{class name: diameter in voxels} at the model's sampling rate."""
        return json.loads(self._diameters.get() or "{}")

    def setDiameters(self, diameters):
        self._diameters.set(json.dumps({str(k): float(v) for k, v in diameters.items()}))

    def getSamplingRate(self):
        return self._samplingRate.get()

    def setSamplingRate(self, value):
        self._samplingRate.set(value)

    def getBinning(self):
        return self._binning.get()

    def setBinning(self, value):
        self._binning.set(int(value))

    def getThresholds(self):
        return json.loads(self._thresholds.get() or "null")

    def setThresholds(self, thresholds):
        self._thresholds.set(json.dumps(thresholds))

    def getBestValF1(self):
        return self._bestValF1.get()

    def setBestValF1(self, value):
        self._bestValF1.set(value)

    def setFromMeta(self, meta):
        """Fill the attributes from a model file's metadata (engine ``read_model_info``: the JSON beside the file)."""
        self.setClassNames(meta["classes"])
        self.setDiameters(meta["diameters"])
        self.setSamplingRate(float(meta.get("voxel_size") or 0.0))
        self.setBinning(int(meta.get("bin", 1)))
        self.setThresholds(meta.get("thresholds"))
        if meta.get("best_val_f1") is not None:
            self.setBestValF1(float(meta["best_val_f1"]))

    def __str__(self):
        names = ", ".join(f"{c} {d:g}" for c, d in self.getDiameters().items())
        f1 = self.getBestValF1()
        return (f"{self.getClassName()} ({names} voxels; {self.getSamplingRate() or 0:g} Å/px"
                + (f"; bin {self.getBinning()}" if self.getBinning() != 1 else "")
                + (f"; val F1 {f1:.2f}" if f1 is not None else "") + ")")
