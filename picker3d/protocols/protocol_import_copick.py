"""Import a copick project's tomograms and picks as a SetOfTomograms and a SetOfCoordinates3D."""
import json
import os
from enum import Enum

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import Transform
from pwem.protocols import ProtImport
from tomo.objects import SetOfCoordinates3D, SetOfTomograms, Tomogram

from ..convert import append_table, set_class_names
from ..engine.formats.readers import read_table
from .protocol_base import ProtPicker3DBase


class ImportCopickOutputs(Enum):
    tomograms = SetOfTomograms
    coordinates = SetOfCoordinates3D


class ProtPicker3DImportCopick(ProtImport, ProtPicker3DBase):
    """Import the tomograms of a copick project (the CZ cryo-ET data portal's and the CZII
    picking challenge's format) at one voxel spacing and reconstruction type, and their picks
    of one user / session, as Scipion sets.

    The project is read by the picker3d engine (its environment has the copick library; Scipion's
    does not): each run's tomogram is written as an MRC file in the run's extra folder (tsId =
    the run's name, sampling rate = the voxel spacing) and its picks, converted from Å to
    voxels, become coordinates (class = the copick object, score kept).
    """
    _label = "import copick project"
    _possibleOutputs = ImportCopickOutputs

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("configFile", params.PathParam, important=True, label="copick configuration",
                      help="The project's configuration file (JSON).")
        form.addParam("runs", params.StringParam, default="", label="Runs",
                      help="Space-separated run names to import (default: empty = every run).")
        form.addParam("voxelSpacing", params.FloatParam, default=10.0, label="Voxel spacing (Å)",
                      help="Voxel spacing of the tomograms to import (default 10).")
        form.addParam("tomoType", params.StringParam, default="wbp", label="Tomogram type",
                      help="Reconstruction type of the tomograms, e.g. wbp, denoised (default wbp).")
        form.addParam("picksUser", params.StringParam, default="", label="Picks of user",
                      help="Import the picks of this copick user (default: empty = any user).")
        form.addParam("picksSession", params.StringParam, default="", label="Picks of session",
                      help="... and this session (default: empty = any session).")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.Positive],
                      label="Box size (px)", help="Box size of the coordinate set, in voxels (default 32).")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.readStep, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _folder(self):
        return self._getExtraPath("copick")

    def readStep(self):
        args = [f"--copick-config {self._quote(self.configFile.get())}", f"--voxel-spacing {self.voxelSpacing.get()}",
                f"--tomo-type {self.tomoType.get()}", f"--out-dir {self._quote(self._folder())}"]
        if self.runs.get() and self.runs.get().strip():
            args.append("--runs " + " ".join(self.runs.get().split()))
        if self.picksUser.get():
            args.append(f"--picks-user {self.picksUser.get()}")
        if self.picksSession.get():
            args.append(f"--picks-session {self.picksSession.get()}")
        self.runEngine("copick-read", " ".join(args))

    def createOutputStep(self):
        with open(os.path.join(self._folder(), "copick_runs.json")) as fh:
            manifest = json.load(fh)
        sampling = manifest["voxel_spacing"]
        tomos = SetOfTomograms.create(self._getPath(), template="tomograms%s.sqlite")
        tomos.setSamplingRate(sampling)
        by_run = {}
        for r in manifest["runs"]:
            nz, ny, nx = r["shape"]
            tomo = Tomogram()
            tomo.setFileName(os.path.join(self._folder(), r["run"] + ".mrc"))
            tomo.setSamplingRate(sampling)
            origin = Transform()
            origin.setShifts(nx / -2.0 * sampling, ny / -2.0 * sampling, nz / -2.0 * sampling)
            tomo.setOrigin(origin)
            tomo.setTsId(r["run"])
            tomos.append(tomo)
            by_run[r["run"]] = tomo.clone()
        self._defineOutputs(**{self._possibleOutputs.tomograms.name: tomos})
        tables = {run: read_table(os.path.join(self._folder(), run + ".tsv"))
                  for run in by_run if os.path.exists(os.path.join(self._folder(), run + ".tsv"))}
        if tables:
            coords = self._createSetOfCoordinates3D(tomos)
            coords.setSamplingRate(sampling)
            coords.setBoxSize(self.boxSize.get())
            classes = sorted({c for t in tables.values() for c in t.class_names()})
            set_class_names(coords, classes)
            for run in sorted(tables):
                table = tables[run]
                if table.classes is None:
                    table.classes = np.asarray([classes[0]] * len(table), dtype=object)
                append_table(coords, table, by_run[run], classes)
            self._defineOutputs(**{self._possibleOutputs.coordinates.name: coords})
            self._defineSourceRelation(tomos, coords)

    def _validate(self):
        errors = []
        if not self.configFile.get() or not os.path.isfile(self.configFile.get()):
            errors.append(f"copick configuration '{self.configFile.get()}' does not exist.")
        if not self.voxelSpacing.get() or self.voxelSpacing.get() <= 0:
            errors.append("Voxel spacing must be positive.")
        return errors

    def _summary(self):
        tomos = getattr(self, self._possibleOutputs.tomograms.name, None)
        if tomos is None:
            return ["Output not ready yet."]
        coords = getattr(self, self._possibleOutputs.coordinates.name, None)
        lines = [f"{tomos.getSize()} tomograms ({self.tomoType.get()}, {self.voxelSpacing.get():g} Å) from "
                 f"{self.configFile.get()}."]
        lines.append(f"{coords.getSize()} picks imported." if coords is not None else "The runs hold no picks.")
        return lines


__all__ = ["ProtPicker3DImportCopick"]
