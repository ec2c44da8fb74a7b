"""Weak-label masks (TBall / Ball / Cubic / sphere / Gaussian) from particle coordinates."""
from enum import Enum

import pyworkflow.protocol.params as params
from pyworkflow.protocol.constants import STEPS_PARALLEL
from tomo.objects import SetOfTomoMasks, TomoMask

from ..convert import link_tomogram, tables_from_coordinates, tomogram_link_path, tomograms_by_ts_id
from ..engine.formats.writers import write_table
from ..engine.masks import MASK_TYPES
from .protocol_base import ProtPicker3DBase


class MasksOutputs(Enum):
    tomoMasks = SetOfTomoMasks


class ProtPicker3DMasks(ProtPicker3DBase):
    """Weak labels from particle centres, one label volume per tomogram (DeepETPicker
    DeepETPicker §A.3): TBall (a ball truncated at the diameter in a cube of side d·t_g),
    Ball, Cubic, a sphere per class, or a Gaussian centre heatmap (sigma = d/6).
    Voxel value = class index (the order of the classes in the coordinates), 0 = background;
    for the Gaussian type, the heatmap in [0, 1].
    """
    _label = "generate masks"
    _possibleOutputs = MasksOutputs
    stepsExecutionMode = STEPS_PARALLEL

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.PointerParam, pointerClass="SetOfCoordinates3D", important=True,
                      label="Coordinates", help="Particle centres from any Scipion picker or picker3d's import; "
                                                "the masks are made on their tomograms.")
        form.addParam("maskType", params.EnumParam, choices=list(MASK_TYPES), default=0, label="Mask type",
                      help="tball: truncated ball (DeepETPicker's default); ball; cubic; sphere "
                           "(a sphere per class); gaussian: centre heatmap.")
        form.addParam("diameters", params.StringParam, default="", label="Diameters (px)",
                      help="name=PIXELS,... per class, or one number for all classes. "
                           "Empty: the coordinates' box size.")
        self._addComputeParams(form, gpu=False, threads=2, parallel_steps=True)

    def _insertAllSteps(self):
        coords = self.inputCoordinates.get()
        ts_ids = sorted({c.getTomoId() for c in coords.iterItems()})
        # the sets are read in one step; the parallel steps run on files only (two step threads
        # iterating one SQLite-backed set at once can crash the protocol's process)
        inputs = self._insertFunctionStep(self.writeInputsStep, needsGPU=False)
        deps = [self._insertFunctionStep(self.maskStep, ts_id, needsGPU=False, prerequisites=[inputs])
                for ts_id in ts_ids]
        self._insertFunctionStep(self.createOutputStep, ts_ids, needsGPU=False, prerequisites=deps)

    def _classes(self):
        return self._coordinateClasses(self.inputCoordinates.get())

    def _diameterArg(self):
        diam = self._diameterDict(self.diameters.get(), self._classes(), self.inputCoordinates.get().getBoxSize())
        return ",".join(f"{c}={d:g}" for c, d in diam.items())

    def writeInputsStep(self):
        """Each tomogram linked and its coordinates written as a table, in its own folder; the
        diameters (they need the set's classes) for the mask steps."""
        coords = self.inputCoordinates.get()
        tomos = tomograms_by_ts_id(coords.getPrecedents())
        for ts_id, table in tables_from_coordinates(coords).items():
            link_tomogram(tomos[ts_id], self._getExtraPath(ts_id))
            write_table(self._tableFile(ts_id), table)
        with open(self._diametersFile(), "w") as f:
            f.write(self._diameterArg())

    def _tableFile(self, ts_id):
        return self._getExtraPath(ts_id, ts_id + ".tsv")

    def _diametersFile(self):
        return self._getExtraPath("diameters.txt")

    def maskStep(self, ts_id):
        tomo_file = tomogram_link_path(self._getExtraPath(ts_id), ts_id)       # made by writeInputsStep
        with open(self._diametersFile()) as f:
            diameters = f.read().strip()
        args = (f"--tomogram {self._quote(tomo_file)} --coords {self._quote(self._tableFile(ts_id))} "
                f"--diameters {diameters} "
                f"--type {MASK_TYPES[self.maskType.get()]} --out {self._quote(self._maskFile(ts_id))}")
        self.runEngine("masks", args, tag=ts_id)

    def _maskFile(self, ts_id):
        return self._getExtraPath(ts_id, ts_id + "_mask.mrc")

    def createOutputStep(self, ts_ids):
        coords = self.inputCoordinates.get()
        tomo_set = coords.getPrecedents()
        tomos = tomograms_by_ts_id(tomo_set)
        masks = SetOfTomoMasks.create(self._getPath(), template="tomomasks%s.sqlite")
        masks.copyInfo(tomo_set)
        for ts_id in ts_ids:
            tomo = tomos[ts_id]
            m = TomoMask()
            m.copyInfo(tomo)
            m.setLocation(self._maskFile(ts_id))
            m.setVolName(tomo.getFileName())
            m.setSamplingRate(tomo.getSamplingRate())
            m.setTsId(ts_id)
            m.setOrigin(tomo.getOrigin())
            masks.append(m)
        self._defineOutputs(**{self._possibleOutputs.tomoMasks.name: masks})
        self._defineSourceRelation(self.inputCoordinates, masks)

    def _validate(self):
        errors = self._emptySetErrors(self.inputCoordinates.get(), "Input coordinates")
        if errors:
            return errors
        try:
            self._diameterArg()
        except ValueError as exc:
            errors.append(str(exc))
        return errors

    def _summary(self):
        out = getattr(self, self._possibleOutputs.tomoMasks.name, None)
        if out is None:
            return ["Output not ready yet."]
        return [f"{out.getSize()} {MASK_TYPES[self.maskType.get()]} masks (diameters {self._diameterArg()} px)."]

    def _methods(self):
        return [f"Weak-label {MASK_TYPES[self.maskType.get()]} masks were generated from particle centres "
                f"with picker3d following DeepETPicker [Liu2024DeepETPicker]."]

    def _citations(self):
        return ["Liu2024DeepETPicker"]
