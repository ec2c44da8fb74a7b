"""The default picker3d workflow as a Scipion workflow (JSON) and as a scripted project run.

import tomograms (tomo) → import annotations (the training tomogram's particles, as a
user's hand-picks) → generate masks → train (time-boxed) → pick all tomograms → export
coordinates (tomo) → classify the picks (DISCA). ``workflow_protocols`` returns the JSON list that
``python -m pyworkflow.project.scripts.create NAME workflow.json`` accepts; ``run_workflow``
loads the same list into a project and runs it protocol by protocol.
"""
import json
import os
import time


def workflow_protocols(data_dir, annotations_dir, diameters, sampling=10.0, minutes=5.0, box=None,
                       binning=2, channels="8,16,24,36", pattern="tomo_??.mrc", classify=True,
                       classify_binning=2):
    """Scipion workflow JSON (list of protocol dicts); paths may be relative to the JSON file.

    ``pattern`` selects the tomograms only: the simulator writes ``tomo_NN_density.mrc`` and
    ``tomo_NN_occupancy.mrc`` beside them, which ``tomo_*.mrc`` would import as tomograms too.
    """
    box = box or 2 * int(round(max(diameters.values()) / 2.0))
    diam = ",".join(f"{k}={v:g}" for k, v in diameters.items())

    def prot(pid, cls, label, **params):
        d = {"object.className": cls, "object.id": str(pid), "object.label": label, "object.comment": "",
             "runName": None, "runMode": 0}
        d.update(params)
        return d

    return [
        prot(1, "ProtImportTomograms", "tomo - import tomograms", filesPath=data_dir, filesPattern=pattern,
             samplingRate=sampling),
        prot(2, "ProtPicker3DImportAnnotations", "picker3d - import annotations (hand-picks)",
             inputTomograms="1.Tomograms", filesPath=annotations_dir, filesPattern="*.tsv", fileFormat=0,
             boxSize=box),
        prot(3, "ProtPicker3DMasks", "picker3d - generate masks", inputCoordinates="2.coordinates",
             maskType=0, diameters=diam),
        prot(4, "ProtPicker3DTrain", "picker3d - train", inputCoordinates="2.coordinates", diameters=diam,
             trainBy=0, minutes=float(minutes), binning=int(binning), channels=channels, useGpu=False,
             numberOfThreads=2),
        prot(5, "ProtPicker3DPick", "picker3d - pick", inputModel="4.model", inputTomograms="1.Tomograms",
             splitClasses=True, useGpu=False, numberOfThreads=1, binThreads=2),
        prot(6, "ProtExportCoordinates3D", "tomo - export coordinates", inputCoordinates="5.coordinates",
             outputFormat=0),
    ] + ([prot(7, "ProtPicker3DClassify", "picker3d - classify picks", inputCoordinates="5.coordinates",
               boxSize=box, binning=int(classify_binning), kMin=2, kMax=10, iterations=8, useGpu=False,
               numberOfThreads=2)] if classify else [])


def write_workflow(path, protocols):
    from .engine.fileio import atomic_text
    atomic_text(path, json.dumps(protocols, indent=2) + "\n")
    return path


def run_workflow(project_name, workflow_json, location=None, log=print):
    """Create a project from ``workflow_json`` and run its protocols in order; returns
    ``(project, [protocols])``. Raises RuntimeError naming the protocol that failed."""
    from pyworkflow.project import Manager
    manager = Manager()
    # a fresh SCIPION_USER_DATA has no projects folder yet; createProject links into it
    os.makedirs(manager.PROJECTS, exist_ok=True)
    if manager.hasProject(project_name):
        manager.deleteProject(project_name)
    project = manager.createProject(project_name, location=location)
    cwd = os.getcwd()
    os.chdir(project.getPath())   # protocols are launched from inside the project folder
    try:
        # relative 'filesPath' values are relative to the JSON file (not every import
        # protocol resolves them itself)
        with open(workflow_json) as fh:
            items = json.load(fh)
        base = os.path.dirname(os.path.abspath(workflow_json))
        for item in items:
            path = item.get("filesPath")
            if path and not os.path.isabs(path):
                item["filesPath"] = os.path.normpath(os.path.join(base, path))
        prots = list(project.loadProtocols(jsonStr=json.dumps(items)).values())
        for i, prot in enumerate(prots, start=1):
            t0 = time.time()
            project.launchProtocol(prot, wait=True)
            prot = project.getProtocol(prot.getObjId())
            prots[i - 1] = prot
            status = prot.getStatusMessage()
            log(f"  [{i}/{len(prots)}] {prot.getObjLabel():45s} {status:10s} {time.time() - t0:6.1f} s")
            if prot.isFailed() or not prot.isFinished():
                raise RuntimeError(f"protocol '{prot.getObjLabel()}' {status}: {prot.getErrorMessage()} "
                                   f"(log: {prot.getLogPaths()[0] if prot.getLogPaths() else prot.getPath()})")
        return project, prots
    finally:
        os.chdir(cwd)


def step(items, class_name):
    """The one workflow entry (a dict of :func:`workflow_protocols`) or protocol (of
    :func:`run_workflow`) of class ``class_name`` (e.g. ``"ProtPicker3DPick"``)."""
    found = [it for it in items
             if (it.get("object.className") if isinstance(it, dict) else it.getClassName()) == class_name]
    if len(found) != 1:
        raise KeyError(f"{len(found)} steps of class {class_name} in the workflow")
    return found[0]
