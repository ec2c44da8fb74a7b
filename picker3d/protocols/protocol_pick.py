"""Pick particles in tomograms with a trained picker3d model."""
import os
from enum import Enum

import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params
from pyworkflow.protocol.constants import STEPS_PARALLEL
from tomo.objects import SetOfCoordinates3D, SetOfTomoMasks, TomoMask

from ..convert import (
    append_table,
    box_from_diameter,
    link_tomogram,
    set_class_names,
    tomogram_link_path,
    tomograms_by_ts_id,
)
from ..engine.formats.readers import read_table
from ..engine.options import PICK_OPTIONS, to_argv
from .protocol_base import EngineError, ProtPicker3DBase

FLIP_CHOICES = ["model's", "1", "2", "4", "8"]
FAILED_FILE = "FAILED"       # in a tomogram's folder: the error line of its failed picking


class PickOutputs(Enum):
    coordinates = SetOfCoordinates3D
    scoreMaps = SetOfTomoMasks


class ProtPicker3DPick(ProtPicker3DBase):
    """Pick particles with a trained picker3d model: overlap-tile inference (DeepETPicker §A.3,
    tiles with a 12-voxel overlap), smoothed foreground score, local maxima by max-pooling,
    class from the neighbourhood's class probabilities, de-duplication within half a
    diameter (DeepETPicker §A.9). Each particle gets its class (groupId, 1-based in the model's
    class order) and a score in [0, 1] usable for precision-recall curves.

    The output set holds every class; optionally one set per class and the score map of
    each tomogram (as tomo masks) are added. Coordinates are in the tomograms' pixels
    (bottom-left-corner origin), ready for Relion-tomo and Dynamo extraction.
    """
    _label = "pick"
    ENGINE_LABELS = {"--z-range": "Keep picks in z planes", "--threshold": "Score threshold",
                     "--voxel-size": "Sampling rate of the tomograms"}
    _possibleOutputs = PickOutputs
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.failedList = pwobj.String()      # comma-separated tsIds whose picking failed

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputModel", params.PointerParam, pointerClass="Picker3DModel", important=True,
                      label="Model", help="A model from picker3d's train or import model protocols.")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms", important=True,
                      label="Tomograms", help="Tomograms to pick, at the sampling rate the model was trained at.")
        form.addParam("threshold", params.FloatParam, default=-1.0, label="Score threshold",
                      help="Minimum particle score for every class; -1 uses the thresholds the model "
                           "calibrated on its validation data.")
        form.addParam("mode", params.EnumParam, choices=["local maxima", "connected components"], default=0,
                      label="Particle detection", expertLevel=params.LEVEL_ADVANCED,
                      help="Local maxima of the smoothed score (default) or centroids of connected "
                           "components of the class map (DeepFinder style).")
        form.addParam("flips", params.EnumParam, choices=FLIP_CHOICES, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Test-time flips", help="Mirrored copies to average (more = slower, smoother).")
        form.addParam("boxSize", params.IntParam, default=0, label="Box size (px)",
                      help="Box size of the output set; 0 = the largest class diameter rounded up to even.")
        form.addParam("invertContrast", params.BooleanParam, default=False, label="Invert contrast?",
                      help="Flip the tomograms' contrast before picking: for tomograms whose dense material is the "
                           "opposite of the model's training tomograms (the pick stops with a message saying so). "
                           "Default: no.")
        form.addParam("zRange", params.StringParam, default="auto", label="Keep picks in z planes",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="auto (default): the specimen slab found in each tomogram (empty ice above and below "
                           "left out); all: every plane; Z0-Z1: these planes (voxels, Z1 exclusive).")
        form.addParam("inputMasks", params.PointerParam, pointerClass="SetOfTomoMasks", allowsNull=True,
                      label="Region masks (optional)",
                      help="Masks of the region of interest (matched to the tomograms by tsId): picks only where "
                           "the mask is non-zero. Default: none.")
        form.addParam("splitClasses", params.BooleanParam, default=False, label="Also one set per class?")
        form.addParam("saveScoreMaps", params.BooleanParam, default=False, label="Save score maps?",
                      help="The per-voxel particle probability of each tomogram, as tomo masks.")
        self._addComputeParams(form, gpu=True, threads=2, parallel_steps=True, precision=True)

    # ---- steps ---------------------------------------------------------------------
    def _insertAllSteps(self):
        ts_ids = sorted(tomograms_by_ts_id(self.inputTomograms.get()))
        # the sets are read in one step; the parallel steps run on files only (two step threads
        # iterating one SQLite-backed set at once crashed the protocol's process once)
        links = self._insertFunctionStep(self.linkTomogramsStep, needsGPU=False)
        deps = [self._insertFunctionStep(self.pickStep, ts_id, needsGPU=self._usesGpu(), prerequisites=[links])
                for ts_id in ts_ids]
        self._insertFunctionStep(self.createOutputStep, ts_ids, needsGPU=False, prerequisites=deps)

    def _folder(self, ts_id):
        return self._getExtraPath(ts_id)

    def linkTomogramsStep(self):
        for ts_id, tomo in tomograms_by_ts_id(self.inputTomograms.get()).items():
            link_tomogram(tomo, self._folder(ts_id))
        if self.inputMasks.get() is not None:
            for mask in self.inputMasks.get().iterItems():
                ts_id = mask.getTsId()
                if ts_id and os.path.isdir(self._folder(ts_id)):     # masks of other tomograms are unused
                    link_tomogram(mask, os.path.join(self._folder(ts_id), "mask"))

    def _maskLink(self, ts_id):
        return tomogram_link_path(os.path.join(self._folder(ts_id), "mask"), ts_id)

    def _failedFile(self, ts_id):
        return os.path.join(self._folder(ts_id), FAILED_FILE)

    def pickStep(self, ts_id):
        """Pick one tomogram. Its failure (an unreadable file, say) does not stop the others:
        the error line is kept in its folder, whatever it wrote there is removed, and the
        output step registers the tomograms that were picked and names the failed tsIds."""
        stale = self._absPath(self._failedFile(ts_id))
        if os.path.exists(stale):        # a failure of an earlier try ('Continue')
            os.remove(stale)
        try:
            self._pickOne(ts_id)
        except EngineError as exc:     # the engine's own error; a stopped run is not a failed tomogram
            folder = self._absPath(self._folder(ts_id))
            for name in (ts_id + ".tsv", ts_id + "_score.mrc"):
                if os.path.exists(os.path.join(folder, name)):
                    os.remove(os.path.join(folder, name))
            with open(os.path.join(folder, FAILED_FILE), "w") as fh:
                fh.write(str(exc).strip().splitlines()[-1] if str(exc).strip() else exc.__class__.__name__)
            self.error(f"picker3d pick: tomogram {ts_id} failed, the others go on: {exc}")

    def failedTsIds(self):
        """{tsId: error line} of the tomograms whose picking failed."""
        out = {}
        for ts_id in sorted(tomograms_by_ts_id(self.inputTomograms.get())):
            path = self._absPath(self._failedFile(ts_id))
            if os.path.exists(path):
                with open(path) as fh:
                    out[ts_id] = fh.read().strip()
        return out

    def _pickOne(self, ts_id):
        link = tomogram_link_path(self._folder(ts_id), ts_id)        # made by linkTomogramsStep
        args = [f"--model {self._quote(self.inputModel.get().getFileName())}", f"--tomograms {self._quote(link)}",
                f"--out-dir {self._quote(self._folder(ts_id))}", self._deviceArg(),
                *to_argv(PICK_OPTIONS, self._engineOptions())]
        if os.path.lexists(self._absPath(self._maskLink(ts_id))):
            args.append(f"--mask {self._quote(self._maskLink(ts_id))}")
        self.runEngine("pick", " ".join(args), tag=ts_id)
        if not os.path.exists(self._absPath(os.path.join(self._folder(ts_id), ts_id + ".tsv"))):
            raise EngineError(f"picker3d pick: the engine wrote no table for {ts_id} (see the run log)")

    def _engineOptions(self):
        """The form as the engine's picking options (picker3d.engine.options.pick): what the
        command line is made from and what _validate checks."""
        threshold = self.threshold.get()
        z_range = getattr(self, "zRange", None)
        return {"precision": self._precision(), "mode": "cc" if self.mode.get() == 1 else "peaks",
                "threshold": threshold if threshold is not None and threshold >= 0 else None,
                "flips": FLIP_CHOICES[self.flips.get()] if self.flips.get() else None,
                "score_map": bool(self.saveScoreMaps.get()),
                # Scipion's sampling rate, not the file header's (which may have none)
                "voxel_size": self.inputTomograms.get().getSamplingRate(),
                "invert": bool(getattr(self, "invertContrast", None) is not None and self.invertContrast.get()),
                "z_range": (z_range.get() or "auto").strip() if z_range is not None else "auto"}

    def getTable(self, ts_id):
        return read_table(self._absPath(os.path.join(self._folder(ts_id), ts_id + ".tsv")), allow_empty=True)

    def _boxSize(self):
        if self.boxSize.get():
            return self.boxSize.get()
        model = self.inputModel.get()
        return box_from_diameter(max(model.getDiameters().values()))

    def createOutputStep(self, ts_ids):
        model = self.inputModel.get()
        tomo_set = self.inputTomograms.get()
        tomos = tomograms_by_ts_id(tomo_set)
        names = model.getClassNames()
        failed = self.failedTsIds()
        self.failedList.set(",".join(failed))
        self._store(self.failedList)
        if len(failed) == len(ts_ids):
            raise RuntimeError("picker3d pick: every tomogram failed: "
                               + "; ".join(f"{ts}: {line}" for ts, line in failed.items()))
        if failed:
            self.warning(f"picker3d pick: not picked (failed): {', '.join(failed)}")
        ts_ids = [ts_id for ts_id in ts_ids if ts_id not in failed]
        tables = {ts_id: self.getTable(ts_id) for ts_id in ts_ids}

        def new_set(suffix, keep):
            coord_set = self._createSetOfCoordinates3D(self.inputTomograms, suffix)
            coord_set.setSamplingRate(tomo_set.getSamplingRate())
            coord_set.setBoxSize(self._boxSize())
            set_class_names(coord_set, names)
            for ts_id in ts_ids:
                t = tables[ts_id]
                if len(t):
                    idx = [i for i, c in enumerate(t.classes) if c in keep]
                    append_table(coord_set, t.subset(idx), tomos[ts_id], names)
            return coord_set

        outputs = {self._possibleOutputs.coordinates.name: new_set("", set(names))}
        if self.splitClasses.get():
            for c in names:
                outputs[f"coordinates_{_safe(c)}"] = new_set(f"_{_safe(c)}", {c})
        if self.saveScoreMaps.get():
            maps = SetOfTomoMasks.create(self._getPath(), template="tomomasks%s.sqlite")
            maps.copyInfo(tomo_set)
            for ts_id in ts_ids:     # the picked ones
                m = TomoMask()
                m.copyInfo(tomos[ts_id])
                m.setLocation(os.path.join(self._folder(ts_id), ts_id + "_score.mrc"))
                m.setVolName(tomos[ts_id].getFileName())
                m.setTsId(ts_id)
                maps.append(m)
            outputs[self._possibleOutputs.scoreMaps.name] = maps
        self._defineOutputs(**outputs)
        for out in outputs.values():
            self._defineSourceRelation(self.inputTomograms, out)
            self._defineSourceRelation(self.inputModel, out)

    # ---- info ----------------------------------------------------------------------
    def _validate(self):
        errors = []
        model, tomos = self.inputModel.get(), self.inputTomograms.get()
        if model is None or tomos is None:
            return ["Model and tomograms are required."]
        if not model.getFileName() or not os.path.exists(model.getFileName()):
            errors.append(f"Model file {model.getFileName()} does not exist.")
        msr, tsr = model.getSamplingRate(), tomos.getSamplingRate()
        # within a factor of 4 the engine resamples the tomograms to the model's sampling
        if msr and tsr and not 0.25 <= tsr / msr <= 4.0:
            errors.append(f"The tomograms are at {tsr:g} Å/px but the model was trained at {msr:g} Å/px: more "
                          f"than 4x apart; bin the tomograms (or train at this sampling).")
        errors += self._engineProblems("pick")
        if tomos.getSize() == 0:
            errors.append(f"The tomogram set {tomos.getObjLabel() or tomos.getObjName()} is empty.")
        try:
            tomograms_by_ts_id(tomos)
        except ValueError as exc:
            errors.append(str(exc))
        return errors

    def _summary(self):
        out = getattr(self, self._possibleOutputs.coordinates.name, None)
        if out is None:
            return ["Picking not finished yet."]
        names = self.inputModel.get().getClassNames()
        counts = {c: 0 for c in names}
        for coord in out.iterItems():
            counts[names[coord.getGroupId() - 1]] += 1
        failed = [ts for ts in (self.failedList.get() or "").split(",") if ts]
        lines = [f"{out.getSize()} particles picked in {self.inputTomograms.get().getSize() - len(failed)} tomograms: "
                 + ", ".join(f"{c} {n}" for c, n in counts.items()) + f"; box {out.getBoxSize()} px."]
        if failed:
            lines.append(f"Failed tomograms (not picked, see the log): {', '.join(failed)}")
        return lines

    def _methods(self):
        return ["Particles were picked with picker3d [Liu2024DeepETPicker]."]

    def _citations(self):
        return ["Liu2024DeepETPicker"]


def _safe(name):
    return "".join(ch if ch.isalnum() else "_" for ch in str(name))
