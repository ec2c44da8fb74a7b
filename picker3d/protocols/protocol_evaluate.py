"""Measure picks against reference picks (e.g. a user's manual picks on a test tomogram)."""
import json
import os
from enum import Enum

import numpy as np
import pyworkflow.protocol.params as params
from tomo.objects import SetOfCoordinates3D

from ..convert import tables_from_coordinates
from ..engine.formats.table import CoordTable
from ..engine.metrics import evaluate_tomograms, match_by_class, reference_radii
from .protocol_base import ProtPicker3DBase

RADIUS_MODES = ["fraction of the diameter", "Å"]


class EvaluateOutputs(Enum):
    truePositives = SetOfCoordinates3D
    falsePositives = SetOfCoordinates3D
    missed = SetOfCoordinates3D


class ProtPicker3DEvaluate(ProtPicker3DBase):
    """Precision, recall, F1, average precision and the CZII F-beta (beta 4, within a quarter
    of the diameter) of picked coordinates against reference coordinates, per tomogram and
    overall, with the same matching as picker3d's command line (Hungarian one-to-one
    matching within the radius; DeepETPicker §A.9 uses half the diameter). The true positives,
    false positives and missed references come out as coordinate sets to look at.
    """
    _label = "evaluate picks"
    _possibleOutputs = EvaluateOutputs

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.PointerParam, pointerClass="SetOfCoordinates3D", important=True,
                      label="Picked coordinates", help="The picks to measure (any picker).")
        form.addParam("referenceCoordinates", params.PointerParam, pointerClass="SetOfCoordinates3D",
                      important=True, label="Reference coordinates",
                      help="The truth, e.g. manual picks of the same tomograms (matched by tsId). Only "
                           "tomograms with reference particles are evaluated.")
        form.addParam("radiusMode", params.EnumParam, choices=RADIUS_MODES, default=0,
                      display=params.EnumParam.DISPLAY_HLIST, label="Matching radius in")
        form.addParam("radiusFraction", params.FloatParam, default=0.5, condition="radiusMode == 0",
                      label="Radius (fraction of the diameter)",
                      help="A pick matches a reference within this fraction of the reference's diameter.")
        form.addParam("radiusAngstrom", params.FloatParam, default=50.0, condition="radiusMode == 1",
                      label="Radius (Å)")
        form.addParam("diameters", params.StringParam, default="", label="Diameters (px of the reference)",
                      help="name=PIXELS,... per class or one number; empty: the reference set's box size.")
        form.addParam("perClass", params.BooleanParam, default=True, label="Match classes?",
                      help="Yes: a pick counts only for a reference of its class (picker3d class names, "
                           "else group ids). No: class-agnostic localisation.")
        form.addParam("scoreThreshold", params.FloatParam, default=-1.0, label="Score threshold",
                      help="Keep picks with at least this score before matching (-1: all). It is marked "
                           "on the curves of the viewer.")

    # ---- steps ---------------------------------------------------------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.evaluateStep, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _resultFile(self):
        return self._getExtraPath("evaluation.json")

    def _tables(self):
        """Picked and reference tables per tsId, in the reference's pixels, with object ids."""
        picked, ref = self.inputCoordinates.get(), self.referenceCoordinates.get()
        scale = (picked.getSamplingRate() or 1.0) / (ref.getSamplingRate() or 1.0)
        pt = tables_from_coordinates(picked, scale=scale, with_ids=True)
        rt = tables_from_coordinates(ref, with_ids=True)
        if not self.perClass.get():
            for t in list(pt.values()) + list(rt.values()):
                t.classes = np.asarray(["particle"] * len(t), dtype=object)
        thr = self.scoreThreshold.get()
        if thr is not None and thr >= 0:
            pt = {k: t.subset(np.where(t.scores >= thr)[0]) for k, t in pt.items()}
        return pt, rt

    def _diameters(self, ref_tables):
        names = sorted({c for t in ref_tables.values() for c in t.class_names()})
        return self._diameterDict(self.diameters.get(), names, self.referenceCoordinates.get().getBoxSize())

    def _radius(self):
        """Radius in reference pixels, or None when it is a fraction of the diameter."""
        if self.radiusMode.get() == 1:
            return self.radiusAngstrom.get() / (self.referenceCoordinates.get().getSamplingRate() or 1.0)
        return None

    def evaluateStep(self):
        pt, rt = self._tables()
        diam = self._diameters(rt)
        radius, frac = self._radius(), self.radiusFraction.get()
        empty = CoordTable(np.zeros((0, 3)), [], [], {"objId": []})
        pairs = {ts_id: (pt.get(ts_id, empty), rt[ts_id]) for ts_id in rt}
        figures = evaluate_tomograms(pairs, diam, radius_frac=frac, radius=radius)
        results, overall = figures["per_tomogram"], figures["overall"]
        matches = {ts_id: self._match(p, r, diam, radius, frac) for ts_id, (p, r) in pairs.items()}
        unused = sorted(set(pt) - set(rt))
        with open(self._resultFile(), "w") as fh:
            json.dump({"overall": overall, "per_tomogram": results, "matches": matches,
                       "picked_without_reference": unused, "diameters": diam,
                       "threshold": self.scoreThreshold.get()}, fh, indent=1)

    @staticmethod
    def _match(pred, ref, diam, radius, frac):
        """Object ids of true positives, false positives and missed references, from the
        engine's class-aware matching (with *Match classes? = No* all classes are one)."""
        pred_hit, ref_hit = match_by_class(pred, ref, reference_radii(ref, diam, frac, radius))
        ids_p, ids_r = pred.extra["objId"], ref.extra["objId"]
        return {"tp": [int(ids_p[i]) for i in np.where(pred_hit)[0]],
                "fp": [int(ids_p[i]) for i in np.where(~pred_hit)[0]],
                "fn": [int(ids_r[i]) for i in np.where(~ref_hit)[0]]}

    def getResults(self):
        path = self._absPath(self._resultFile())
        if not os.path.exists(path):
            return None
        with open(path) as fh:
            return json.load(fh)

    def createOutputStep(self):
        res = self.getResults()
        ids = {k: {i for m in res["matches"].values() for i in m[k]} for k in ("tp", "fp", "fn")}
        outputs = {}
        for name, source, key in (("truePositives", self.inputCoordinates, "tp"),
                                  ("falsePositives", self.inputCoordinates, "fp"),
                                  ("missed", self.referenceCoordinates, "fn")):
            src = source.get()
            out = self._createSetOfCoordinates3D(src.getPrecedents(), f"_{name}")
            out.copyInfo(src)
            for coord in src.iterCoordinates():
                if coord.getObjId() in ids[key]:
                    new = coord.clone()
                    new.setObjId(None)
                    new.setVolume(coord.getVolume())
                    out.append(new)
            outputs[name] = out
        self._defineOutputs(**outputs)
        for out in outputs.values():
            self._defineSourceRelation(self.inputCoordinates, out)
            self._defineSourceRelation(self.referenceCoordinates, out)

    # ---- info ----------------------------------------------------------------------
    def _validate(self):
        errors = self._emptySetErrors(self.inputCoordinates.get(), "Picked coordinates")
        errors += self._emptySetErrors(self.referenceCoordinates.get(), "Reference coordinates")
        if errors:
            return errors
        ref = self.referenceCoordinates.get()
        picked_ids = set(self.inputCoordinates.get().getTSIds())
        ref_ids = set(ref.getTSIds())
        if not picked_ids & ref_ids:
            errors.append(f"No tomogram in common: picks on {', '.join(sorted(picked_ids)[:5])}, references on "
                          f"{', '.join(sorted(ref_ids)[:5])}.")
        if self.radiusMode.get() == 0 and not self.radiusFraction.get() > 0:
            errors.append("Radius fraction must be positive.")
        if self.radiusMode.get() == 1 and not self.radiusAngstrom.get() > 0:
            errors.append("Radius in Å must be positive.")
        if self.radiusMode.get() == 0:
            try:
                self._diameterDict(self.diameters.get(), ["*"], ref.getBoxSize())
            except ValueError as exc:
                errors.append(str(exc))
        return errors

    def _summary(self):
        res = self.getResults()
        if res is None:
            return ["Evaluation not finished yet."]
        o = res["overall"]
        lines = [f"Overall localisation (any class): precision {o['precision']:.3f}, recall {o['recall']:.3f}, "
                 f"F1 {o['f1']:.3f}, AP {o['ap']:.3f}, CZII F-beta {o['czii_fbeta']:.3f}."]
        # the output sets come from this matching: class-aware when classes are matched
        m = o["class_aware"] if self.perClass.get() else o
        kind = "class-aware" if self.perClass.get() else "any class"
        lines.append(f"Matches ({kind}, = the output sets): {m['tp']} true positives, {m['fp']} false positives, "
                     f"{m['fn']} missed; precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}.")
        for ts_id, r in res["per_tomogram"].items():
            lines.append(f"{ts_id}: P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f} AP {r['ap']:.3f} "
                         f"F-beta {r['czii_fbeta']:.3f}")
        if res["picked_without_reference"]:
            lines.append(f"Not evaluated (no reference): {', '.join(res['picked_without_reference'])}.")
        return lines

    def _methods(self):
        return ["Picks were compared with reference coordinates by one-to-one matching within a radius "
                "[Liu2024DeepETPicker]."]

    def _citations(self):
        return ["Liu2024DeepETPicker"]
