"""Export any SetOfCoordinates3D into a copick project, as one user / session's picks."""
import os

import pyworkflow.protocol.params as params

from ..convert import tables_from_coordinates
from ..engine.formats.writers import write_table
from .protocol_base import ProtPicker3DBase


class ProtPicker3DExportCopick(ProtPicker3DBase):
    """Write a coordinate set (from any Scipion picker) into a copick project: the picks of
    each tomogram go to the run named by its tsId, in Å (voxel index x the coordinates'
    sampling rate), as the user / session given, one picks file per class, each particle's
    score kept. An object the project's configuration lacks is added, with the radius given.

    The engine writes the project (its environment has the copick library; Scipion's does not).
    Every tsId must name a run of the project; nothing is written otherwise.
    """
    _label = "export to copick"

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.PointerParam, pointerClass="SetOfCoordinates3D", important=True,
                      label="Coordinates", help="The picks to export (tsId = the copick run).")
        form.addParam("configFile", params.PathParam, important=True, label="copick configuration",
                      help="The project's configuration file (JSON).")
        form.addParam("userId", params.StringParam, default="picker3d", label="copick user",
                      help="User the picks are stored under (default picker3d).")
        form.addParam("sessionId", params.StringParam, default="0", label="copick session",
                      help="Session the picks are stored under (default 0).")
        form.addParam("diameters", params.StringParam, default="", label="Diameters of new objects (px)",
                      help="name=VOX,...: the diameter of each class the configuration lacks, which is added "
                           "as a particle object with half of it as radius (default: empty = the box size).")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.exportStep, needsGPU=False)

    def exportStep(self):
        coords = self.inputCoordinates.get()
        folder = self._getExtraPath("tables")
        os.makedirs(folder, exist_ok=True)
        tables = tables_from_coordinates(coords)
        paths = []
        for ts_id in sorted(tables):
            paths.append(os.path.join(folder, ts_id + ".tsv"))
            write_table(paths[-1], tables[ts_id])
        names = self._coordinateClasses(coords)
        diam = self._diameterDict(self.diameters.get(), names, coords.getBoxSize())
        args = [f"--copick-config {self._quote(self.configFile.get())}",
                "--coords " + " ".join(self._quote(p) for p in paths), "--runs " + " ".join(sorted(tables)),
                f"--voxel-spacing {coords.getSamplingRate()}", f"--out-user {self.userId.get()}",
                f"--out-session {self.sessionId.get()}",
                "--diameters " + ",".join(f"{k}={v:g}" for k, v in diam.items())]
        self.runEngine("copick-write", " ".join(args))

    def _validate(self):
        errors = self._emptySetErrors(self.inputCoordinates.get(), "Input coordinates")
        if not self.configFile.get() or not os.path.isfile(self.configFile.get()):
            errors.append(f"copick configuration '{self.configFile.get()}' does not exist.")
        if not (self.userId.get() or "").strip() or not (self.sessionId.get() or "").strip():
            errors.append("copick user and session must not be empty.")
        return errors

    def _summary(self):
        if not os.path.isdir(self._getExtraPath("tables")):
            return ["Export not done yet."]
        coords = self.inputCoordinates.get()
        return [f"{coords.getSize()} picks written to {self.configFile.get()} as user {self.userId.get()}, "
                f"session {self.sessionId.get()}."]


__all__ = ["ProtPicker3DExportCopick"]
