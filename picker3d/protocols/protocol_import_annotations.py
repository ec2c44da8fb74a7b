"""Import hand-picked particle coordinates (any format the engine reads) as Scipion coordinates."""
import glob
import os
from enum import Enum

import numpy as np
import pyworkflow.protocol.params as params
from pwem.protocols import ProtImport
from tomo.convert.mdoc import normalizeTSId
from tomo.objects import SetOfCoordinates3D

from ..convert import append_table, set_class_names, tomograms_by_ts_id
from ..engine.errors import InputError
from ..engine.formats.readers import FORMATS, read_table
from .protocol_base import ProtPicker3DBase

FORMAT_CHOICES = ["auto"] + list(FORMATS)


class ImportAnnotationsOutputs(Enum):
    coordinates = SetOfCoordinates3D


class ProtPicker3DImportAnnotations(ProtImport, ProtPicker3DBase):
    """Import particle coordinates from files: plain text (any column order), picker3d TSV,
    RELION star (including RELION 5 centred Å), Dynamo tbl, DeepETPicker coords,
    DeepFinder XML, copick JSON and SHREC particle lists.

    Files are matched to the tomograms by tsId after Scipion's tsId normalisation
    (a leading digit gets ``TS_``, ``-`` becomes ``_``); files with a tomogram column
    (star ``rlnTomoName``) are split by it. The class of each particle goes to
    ``groupId`` (1-based, classes sorted by name) and its name is kept with the set.
    """
    _label = "import annotations"
    _possibleOutputs = ImportAnnotationsOutputs

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms", important=True,
                      label="Tomograms", help="Tomograms the coordinates refer to (matched by tsId).")
        form.addParam("filesPath", params.PathParam, label="Files directory",
                      help="Folder with the coordinate files, one per tomogram named after it "
                           "(e.g. TS_01.txt for tsId TS_01), or one file with a tomogram column.")
        form.addParam("filesPattern", params.StringParam, default="*",
                      label="Pattern", help="Glob pattern of the files inside the folder, e.g. *.star.")
        form.addParam("fileFormat", params.EnumParam, choices=FORMAT_CHOICES, default=0,
                      label="Format", help="File format; 'auto' decides from the extension "
                                           "(.txt/.csv text, .tsv, .star, .tbl, .coords, .xml, .json; "
                                           "particle_locations*.txt is SHREC).")
        form.addParam("columnOrder", params.StringParam, default="xyz", label="Column order (text files)",
                      help="Order of the first three columns of plain text files, e.g. xyz or zyx.")
        form.addParam("origin", params.EnumParam, choices=["0 (first voxel is 0)", "1 (first voxel is 1)"],
                      default=0, label="Index of the first voxel",
                      help="1 for 1-based tools (IMOD point lists, Dynamo tables); 0 for 0-based "
                           "(Scipion, EMAN, numpy). Not used for RELION 5 centred coordinates.")
        form.addParam("coordsSamplingRate", params.FloatParam, default=0.0,
                      label="Coordinates sampling rate (Å/px)",
                      help="Pixel size the coordinates were picked at; they are rescaled to the "
                           "tomograms' sampling. 0 = same as the tomograms.")
        form.addParam("className", params.StringParam, default="", label="Class name (optional)",
                      help="Give every imported particle this class. Empty: use the file's class "
                           "column (or '1' when it has none).")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.Positive],
                      label="Box size (px)", help="Box size of the output set, in pixels of the tomograms; "
                                                 "picker3d reads it as the particle diameter by default.")

    def processImportDict(self, importDict, importDir):
        """Workflow JSON import: a relative 'filesPath' (./annotations) is taken relative to the
        JSON file, as pwem's image imports do."""
        path = importDict.get("filesPath")
        if path and not os.path.isabs(path) and importDir:
            candidate = os.path.normpath(os.path.join(importDir, path))
            if os.path.exists(candidate):
                importDict["filesPath"] = candidate
        return importDict

    # ---- steps ---------------------------------------------------------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, needsGPU=False)

    def _files(self):
        return sorted(f for f in glob.glob(os.path.join(self.filesPath.get() or "", self.filesPattern.get() or "*"))
                      if os.path.isfile(f))

    def _readFile(self, path, tomo):
        fmt = FORMAT_CHOICES[self.fileFormat.get()]
        nz = tomo.getDimensions()[2]
        nx, ny = tomo.getDimensions()[:2]
        kw = dict(column_order=self.columnOrder.get() or "xyz", origin=self.origin.get(),
                  pixel_size=self._coordsSampling(), tomo_shape=(nz, ny, nx))
        if self.className.get():
            kw["class_name"] = self.className.get()
        return read_table(path, None if fmt == "auto" else fmt, **kw)

    def _coordsSampling(self):
        return self.coordsSamplingRate.get() or self.inputTomograms.get().getSamplingRate()

    def _matchFiles(self, tomos):
        """[(file, tsId or None for per-row tomogram column)], unmatched file names."""
        matched, unmatched = [], []
        for f in self._files():
            ts_id = normalizeTSId(os.path.basename(f))
            if ts_id in tomos:
                matched.append((f, ts_id))
            elif f.endswith(".star") and len(tomos):
                matched.append((f, None))
            else:
                unmatched.append(os.path.basename(f))
        return matched, unmatched

    def importStep(self):
        tomo_set = self.inputTomograms.get()
        tomos = tomograms_by_ts_id(tomo_set)
        matched, unmatched = self._matchFiles(tomos)
        scale = self._coordsSampling() / tomo_set.getSamplingRate()
        per_tomo = {}
        for path, ts_id in matched:
            any_tomo = tomos[ts_id] if ts_id else next(iter(tomos.values()))
            table = self._readFile(path, any_tomo)
            if ts_id is None:   # split by the file's tomogram column
                names = table.extra.get("tomo")
                if names is None:
                    unmatched.append(os.path.basename(path))
                    continue
                for name in sorted(set(names.tolist())):
                    key = normalizeTSId(str(name))
                    if key in tomos:
                        per_tomo.setdefault(key, []).append((path, table.subset(np.where(names == name)[0])))
                    else:
                        unmatched.append(f"{os.path.basename(path)}:{name}")
            else:
                per_tomo.setdefault(ts_id, []).append((path, table))
        if unmatched:
            self.info(f"WARNING: no tomogram with a matching tsId for: {', '.join(unmatched)} "
                      f"(tsIds: {', '.join(sorted(tomos))})")
        if not per_tomo:
            raise ValueError(f"no coordinate file in {self.filesPath.get()} matches a tsId of the tomograms "
                             f"({', '.join(sorted(tomos))})")
        classes = sorted({c for lst in per_tomo.values() for _, t in lst
                          for c in (t.class_names() if t.classes is not None else ["1"])})
        coord_set = self._createSetOfCoordinates3D(self.inputTomograms)
        coord_set.setSamplingRate(tomo_set.getSamplingRate())
        coord_set.setBoxSize(self.boxSize.get())
        set_class_names(coord_set, classes)
        for ts_id in sorted(per_tomo):
            tomo = tomos[ts_id]
            nx, ny, nz = tomo.getDimensions()
            for path, table in per_tomo[ts_id]:
                table = table.scaled(scale) if scale != 1 else table
                if table.classes is None:
                    table.classes = np.asarray(["1"] * len(table), dtype=object)
                try:
                    table.check_inside((nz, ny, nx), source=path)
                except InputError as exc:
                    raise ValueError(f"{exc} (tomogram {ts_id}; check the sampling rate and origin)") from None
                append_table(coord_set, table, tomo, classes)
        if coord_set.getSize() == 0:
            raise ValueError(f"the coordinate files in {self.filesPath.get()} hold no particle")
        self._defineOutputs(**{self._possibleOutputs.coordinates.name: coord_set})
        self._defineSourceRelation(self.inputTomograms, coord_set)

    # ---- info ----------------------------------------------------------------------
    def _validate(self):
        errors = []
        if not self.filesPath.get() or not os.path.isdir(self.filesPath.get()):
            errors.append(f"Files directory '{self.filesPath.get()}' does not exist.")
            return errors
        if not self._files():
            errors.append(f"No file matches {os.path.join(self.filesPath.get(), self.filesPattern.get())}.")
            return errors
        order = (self.columnOrder.get() or "").lower()
        if sorted(order) != ["x", "y", "z"]:
            errors.append(f"Column order '{self.columnOrder.get()}' must be a permutation of xyz.")
        tomo_set = self.inputTomograms.get()
        if tomo_set is not None:
            try:
                tomos = tomograms_by_ts_id(tomo_set)
            except ValueError as exc:
                return errors + [str(exc)]
            matched, unmatched = self._matchFiles(tomos)
            if not matched:
                errors.append(f"No coordinate file matches a tomogram: files {', '.join(unmatched[:5])} vs "
                              f"tsIds {', '.join(sorted(tomos)[:5])}.")
        return errors

    def _summary(self):
        out = getattr(self, self._possibleOutputs.coordinates.name, None)
        if out is None:
            return ["Output not ready yet."]
        from ..convert import get_class_names
        return [f"{out.getSize()} particles imported from {self.filesPath.get()} "
                f"({self.filesPattern.get()}), classes: {', '.join(get_class_names(out) or [])}, "
                f"box {out.getBoxSize()} px."]

    def _methods(self):
        out = getattr(self, self._possibleOutputs.coordinates.name, None)
        if out is None:
            return []
        return [f"{out.getSize()} particle coordinates were imported with picker3d."]


__all__ = ["ProtPicker3DImportAnnotations"]
