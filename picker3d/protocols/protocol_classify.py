"""Sort picked particles into structurally homogeneous classes (DISCA)."""
import json
import os
from enum import Enum

import pyworkflow.object as pwobj
import pyworkflow.protocol.params as params
from tomo.objects import (
    AverageSubTomogram,
    SetOfAverageSubTomograms,
    SetOfClassesSubTomograms,
    SetOfCoordinates3D,
    SetOfSubTomograms,
    SubTomogram,
)

from ..convert import (
    CLASS_ATTR,
    alignment_transforms,
    link_tomogram,
    set_class_names,
    tables_from_coordinates,
    tomogram_link_path,
    tomograms_by_ts_id,
)
from ..engine.formats.readers import read_table
from ..engine.formats.writers import write_table
from ..engine.options import CLASSIFY_OPTIONS, option_help, to_argv
from .protocol_base import ProtPicker3DBase

POSTERIOR_ATTR = "_picker3dPosterior"
PICKED_CLASS_ATTR = "_picker3dPickedClass"


class ClassifyOutputs(Enum):
    coordinates = SetOfCoordinates3D
    averages = SetOfAverageSubTomograms
    subtomograms = SetOfSubTomograms
    classes = SetOfClassesSubTomograms


class ProtPicker3DClassify(ProtPicker3DBase):
    """Unsupervised sorting of picked sub-volumes into homogeneous classes with DISCA
    (DISCA): a YOPO network (convolutions without pooling, global max-pool after each,
    Gaussian dropout; §"YOPO") learns features, a full-covariance Gaussian mixture with K
    chosen by BIC (candidates 2-20 as in Table 1) labels them, and the two alternate; the
    iteration with the lowest DDBI is the result. The first labels come from
    rotation-invariant descriptors (radial density profiles, and per-shell spherical-harmonic
    energies that tell a rod from a globule), which the network iterations refine.

    Classes smaller than max(8, 2 % of the picks) are dissolved, their picks going to the class
    average they fit best, and two classes are merged when a fifth of one's picks fit the
    other's aligned average better than their own and the two averages agree as well as the
    noisier class's half averages: one species seen twice becomes one class.

    Each class's members are then aligned to one another (reference-free: a rotation
    search by cross-correlation with the missing wedge masked in Fourier space) and
    averaged; two half averages give the class's FSC resolution.

    Outputs: the coordinates with groupId = class (posterior probability kept per
    particle), one coordinate set per class (to extract and average in Relion-tomo or
    Dynamo directly), the aligned average of each class, and optionally the sub-volumes as
    sub-tomograms with their alignment as transform, in classes whose representatives are
    the averages.
    """
    _label = "classify picks"
    ENGINE_LABELS = {"--k-range": "Number of classes (min, max)", "--box": "Box size", "--bin": "Binning",
                     "--iterations": "Iterations", "--contrast-weight": "Weight of box contrast",
                     "--split-separation": "Split classes by centre density", "--tilt-range": "Tilt range",
                     "--align-step": "Angular step", "--pca-dim": "PCA components",
                     "--network-from": "Train the network from", "--shape-weight": "Weight of anisotropy",
                     "--min-class-size": "Smallest class"}
    _possibleOutputs = ClassifyOutputs

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.PointerParam, pointerClass="SetOfCoordinates3D", important=True,
                      label="Coordinates", help="Picked particles (from picker3d or any picker) on their tomograms.")
        form.addParam("boxSize", params.IntParam, default=0, label="Box size (px)",
                      help="Side of the sub-volume extracted around each particle, in tomogram pixels. "
                           "0 = the coordinates' box size (about 1.3 x the particle diameter works well).")
        form.addParam("binning", params.IntParam, default=2, validators=[params.Positive], label="Binning",
                      help="Sub-volumes are binned by this factor before clustering: faster and less "
                           "noisy; 1 keeps full detail for small particles.")
        line = form.addLine("Number of classes", help="Candidate K range; BIC picks K inside it.")
        line.addParam("kMin", params.IntParam, default=2, label="min")
        line.addParam("kMax", params.IntParam, default=20, label="max")
        form.addParam("iterations", params.IntParam, default=10, validators=[params.Positive],
                      label="Iterations", help="Maximum DISCA iterations (it stops earlier when labels are stable).")
        form.addParam("merge", params.BooleanParam, default=True, label="Merge classes of one species?",
                      help=option_help("classify", "merge"))
        form.addParam("minClassSize", params.IntParam, default=0, condition="merge", label="Smallest class",
                      expertLevel=params.LEVEL_ADVANCED, help=option_help("classify", "min_class_size"))
        form.addParam("refine", params.BooleanParam, default=False, condition="merge",
                      expertLevel=params.LEVEL_ADVANCED, label="Refine every pick against the averages?",
                      help=option_help("classify", "refine"))
        form.addParam("outOfVolume", params.EnumParam, choices=["pad", "skip"], default=0,
                      label="Boxes crossing the border", expertLevel=params.LEVEL_ADVANCED,
                      help="pad: fill the missing part by mirroring the tomogram at its edge (default); skip: leave "
                           "the particle out.")
        form.addParam("pcaDim", params.IntParam, default=8, validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label="Feature dimensions",
                      help="PCA components the Gaussian mixture sees (default 8; docs/classification.md).")
        form.addParam("networkFrom", params.IntParam, default=1000, validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label="Train the network from (picks)",
                      help="The DISCA network (YOPO) is trained only when there are at least this many picks; "
                           "fewer are clustered on their radial density profiles alone (default 1000).")
        form.addParam("shapeWeight", params.FloatParam, default=0.6, expertLevel=params.LEVEL_ADVANCED,
                      label="Weight of anisotropy", help=option_help("classify", "shape_weight"))
        form.addParam("contrastWeight", params.FloatParam, default=3.0, expertLevel=params.LEVEL_ADVANCED,
                      label="Weight of box contrast",
                      help="Each box's contrast (its density spread, and the density at its centre against its "
                           "rim, in the tomogram's units) joins the shape features with this weight: it tells "
                           "a strong object (gold) from a faint one of the same shape and an empty-ice pick "
                           "from a particle. Default 3; 0 = shape only (docs/classification.md).")
        form.addParam("splitSeparation", params.FloatParam, default=3.0, expertLevel=params.LEVEL_ADVANCED,
                      label="Split classes by centre density",
                      help="After clustering, a class whose boxes' centre density is clearly bimodal is split "
                           "in two: empty-ice picks that look like particles once normalised, but hold no "
                           "density where they were picked. The value is the separation the two groups need "
                           "(Ashman's D, default 3; docs/classification.md). 0 = no split.")
        form.addSection(label="Class averages")
        form.addParam("align", params.BooleanParam, default=True, label="Align class members?",
                      help="Yes (default): each class's members are aligned to one another before averaging "
                           "(reference-free rotation search, missing wedge masked), with an FSC resolution per "
                           "class. No: plain, unaligned averages.")
        form.addParam("tiltRange", params.FloatParam, default=60.0, condition="align",
                      label="Tilt range (+- deg)",
                      help="The tomograms' tilt range, for the missing-wedge mask (default 60).")
        form.addParam("alignStep", params.FloatParam, default=30.0, condition="align",
                      expertLevel=params.LEVEL_ADVANCED, label="Angular step (deg)",
                      help="Step of the global rotation search (default 30); a local search at a third "
                           "of it follows.")
        form.addParam("seed", params.IntParam, default=0, label="Random seed", expertLevel=params.LEVEL_ADVANCED,
                      help="Results are reproducible for a given seed; run a few seeds and keep the "
                           "lowest DDBI to be safe (DISCA, Discussion).")
        form.addParam("splitClasses", params.BooleanParam, default=True, label="One coordinate set per class?")
        form.addParam("outputClasses", params.BooleanParam, default=False,
                      label="Classes of sub-tomograms?",
                      help="Also write every extracted sub-volume (full resolution, box size above, each "
                           "tomogram normalised to zero mean and unit std) and output them as sub-tomograms "
                           "grouped in a SetOfClassesSubTomograms, with the class averages as representatives. "
                           "Needs disk space: one file per particle.")
        self._addComputeParams(form, gpu=True, threads=2)

    # ---- steps ---------------------------------------------------------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.exportStep, needsGPU=False)
        self._insertFunctionStep(self.classifyStep, needsGPU=self._usesGpu())
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _box(self):
        return self.boxSize.get() or int(self.inputCoordinates.get().getBoxSize() or 32)

    def _labelsFile(self):
        return self._getExtraPath("labels.tsv")

    def _boxesDir(self):
        return self._getExtraPath("subtomograms")

    def getAverageFile(self, i):
        """The average of class ``i`` (1-based), as the engine writes it."""
        return self._getExtraPath("labels_averages", f"class_{i:02d}.mrc")

    def exportStep(self):
        coords = self.inputCoordinates.get()
        tomos = tomograms_by_ts_id(coords.getPrecedents())
        for ts_id, table in sorted(tables_from_coordinates(coords, with_ids=True).items()):
            link_tomogram(tomos[ts_id], self._getExtraPath("tomograms"))
            write_table(self._getExtraPath("tomograms", ts_id + ".tsv"), table)

    def classifyStep(self):
        folder = self._getExtraPath("tomograms")
        ts_ids = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".tsv"))
        args = ["--tomograms " + " ".join(self._quote(tomogram_link_path(folder, t)) for t in ts_ids),
                "--coords " + " ".join(self._quote(os.path.join(folder, t + ".tsv")) for t in ts_ids),
                *to_argv(CLASSIFY_OPTIONS, self._engineOptions()),
                f"--out {self._quote(self._labelsFile())}",
                f"--averages {self._quote(os.path.dirname(self.getAverageFile(1)))}", self._deviceArg()]
        if self.outputClasses.get():
            args.append(f"--boxes-dir {self._quote(self._boxesDir())}")
        self.runEngine("classify", " ".join(args))

    def _engineOptions(self):
        """The form as the engine's classification options (picker3d.engine.options.classify):
        what the command line is made from and what _validate checks."""
        return {"box": self._box(), "bin": self.binning.get(), "k_range": f"{self.kMin.get()}-{self.kMax.get()}",
                "iterations": self.iterations.get(), "out_of_volume": "skip" if self.outOfVolume.get() else "pad",
                "seed": self.seed.get(), "pca_dim": self.pcaDim.get(), "network_from": self.networkFrom.get(),
                "contrast_weight": self.contrastWeight.get(), "split_separation": self.splitSeparation.get(),
                "align": bool(self.align.get()), "tilt_range": self.tiltRange.get(), "align_step": self.alignStep.get(),
                "shape_weight": self.shapeWeight.get(), "merge": bool(self.merge.get()),
                "min_class_size": self.minClassSize.get(), "refine": bool(self.refine.get())}

    def getResult(self):
        """{objId: (cluster 1-based, posterior)} and the run's DISCA summary (None before the run)."""
        path = self._absPath(self._labelsFile())
        if not os.path.exists(path):
            return {}, None
        table = read_table(path)
        result = {int(i): (int(c), float(p)) for i, c, p in
                  zip(table.extra["objId"], table.extra["cluster"], table.extra["posterior"])}
        with open(os.path.splitext(path)[0] + "_disca.json") as fh:
            return result, json.load(fh)

    def createOutputStep(self):
        coords = self.inputCoordinates.get()
        result, info = self.getResult()
        k = int(info["k"])
        names = [f"class_{i:02d}" for i in range(1, k + 1)]

        def new_set(suffix, keep):
            out = self._createSetOfCoordinates3D(coords.getPrecedents(), suffix)
            out.setSamplingRate(coords.getSamplingRate())
            out.setBoxSize(coords.getBoxSize() or self._box())
            set_class_names(out, names)
            for coord in coords.iterCoordinates():
                cluster, post = result.get(coord.getObjId(), (None, None))
                if cluster is None or cluster not in keep:
                    continue   # left out (box outside the tomogram with 'skip')
                new = coord.clone()
                new.setObjId(None)
                new.setVolume(coord.getVolume())
                picked = getattr(coord, CLASS_ATTR, None)
                if picked is not None and picked.get():
                    setattr(new, PICKED_CLASS_ATTR, pwobj.String(picked.get()))
                new.setGroupId(cluster)
                setattr(new, CLASS_ATTR, pwobj.String(names[cluster - 1]))
                setattr(new, POSTERIOR_ATTR, pwobj.Float(post))
                out.append(new)
            return out

        outputs = {self._possibleOutputs.coordinates.name: new_set("", set(range(1, k + 1)))}
        if self.splitClasses.get():
            for i, name in enumerate(names, start=1):
                outputs[f"coordinates_{name}"] = new_set(f"_{name}", {i})
        averages = self._createSetOfAverageSubTomograms()
        averages.setSamplingRate(coords.getPrecedents().getSamplingRate())
        for i in range(1, len(names) + 1):
            avg = AverageSubTomogram()
            avg.setLocation(self.getAverageFile(i))
            avg.setSamplingRate(averages.getSamplingRate())
            avg.setClassId(i) if hasattr(avg, "setClassId") else None
            avg.setObjComment(self._classComment(info, i))
            averages.append(avg)
        outputs[self._possibleOutputs.averages.name] = averages
        if self.outputClasses.get():
            subtomos, classes = self._classesOfSubtomograms(result, names)
            outputs[self._possibleOutputs.subtomograms.name] = subtomos
            outputs[self._possibleOutputs.classes.name] = classes
        self._defineOutputs(**outputs)
        for out in outputs.values():
            self._defineSourceRelation(self.inputCoordinates, out)

    @staticmethod
    def _classComment(info, i):
        res = {r["class"]: r for r in info.get("resolution", [])}.get(i)
        text = f"{info['sizes'][i - 1]} particles"
        if res:
            text += f", FSC 0.143 {res['fsc_0143_A']:.0f} Å (0.5: {res['fsc_05_A']:.0f} Å)"
        return text

    def _classesOfSubtomograms(self, result, names):
        """The extracted sub-volumes as sub-tomograms (coordinate = the input pick), grouped
        by class; each class's representative is its average."""
        coords = self.inputCoordinates.get()
        tomos = tomograms_by_ts_id(coords.getPrecedents())
        table = read_table(self._absPath(self._labelsFile()))
        files = dict(zip((int(i) for i in table.extra["objId"]), table.extra["box_file"]))
        transforms = alignment_transforms(table, self._box())
        sampling = coords.getPrecedents().getSamplingRate()
        subtomos = self._createSetOfSubTomograms()
        subtomos.setSamplingRate(sampling)
        subtomos.setCoordinates3D(self.inputCoordinates)
        for coord in coords.iterCoordinates():
            if coord.getObjId() not in files:
                continue   # left out (box outside the tomogram with 'skip')
            tomo = tomos[coord.getTomoId()]
            sub = SubTomogram()
            sub.setFileName(os.path.join(self._boxesDir(), files[coord.getObjId()]))
            sub.setSamplingRate(sampling)
            new = coord.clone()
            new.setVolume(coord.getVolume())
            sub.setCoordinate3D(new)
            sub.setVolName(tomo.getFileName())
            sub.setClassId(result[coord.getObjId()][0])
            if coord.getObjId() in transforms:
                sub.setTransform(transforms[coord.getObjId()])
            if tomo.hasAcquisition():
                sub.setAcquisition(tomo.getAcquisition())
            subtomos.append(sub)
        subtomos.write()
        classes = self._createSetOfClassesSubTomograms(subtomos)

        def representative(cls):
            rep = cls.getRepresentative()
            rep.setLocation(self.getAverageFile(cls.getObjId()))
            rep.setSamplingRate(sampling)
            cls.setObjComment(names[cls.getObjId() - 1])

        classes.classifyItems(updateClassCallback=representative)
        return subtomos, classes

    # ---- info ----------------------------------------------------------------------
    def _validate(self):
        coords = self.inputCoordinates.get()
        errors = self._emptySetErrors(coords, "Input coordinates")
        if errors:
            return errors
        errors += self._engineProblems("classify")
        if coords.getSize() <= max(self.kMin.get(), 2):
            errors.append(f"The coordinate set {coords.getObjLabel() or coords.getObjName()} has "
                          f"{coords.getSize()} particles: too few to cluster.")
        return errors

    def _summary(self):
        out = getattr(self, self._possibleOutputs.coordinates.name, None)
        if out is None:
            return ["Classification not finished yet."]
        _, info = self.getResult()
        sizes = ", ".join(f"class {i}: {n}" for i, n in enumerate(info["sizes"], start=1))
        lines = [f"{out.getSize()} particles in {info['k']} classes ({sizes}).",
                 f"Result of iteration {info['iteration']} (lowest DDBI {info['ddbi']:.3f})."]
        for r in info.get("resolution", []):
            lines.append(f"Class {r['class']} ({r['members']} aligned): FSC 0.143 at {r['fsc_0143_A']:.1f} Å, "
                         f"0.5 at {r['fsc_05_A']:.1f} Å.")
        for sp in info.get("density_splits", []):
            lines.append(f"Clustering class {sp['new_class']} was split from {sp['class']} by centre density "
                         f"(separation {sp['separation']:.1f}): look there for empty picks.")
        final = {c: i for i, c in enumerate(info.get("clustering_classes", []), start=1)}
        for m in info.get("merges", []):
            lines.append(f"Clustering classes {m['class']} and {m['merged']} were merged into class "
                         f"{final.get(m['class'], '?')}: {100 * m['confusion']:.0f} % of one's picks fit the other's "
                         f"average better; the averages agree {m['agreement']:.2f} (half averages "
                         f"{m['half_agreement']:.2f}).")
        return lines

    def _methods(self):
        return ["Picked particles were sorted into classes with picker3d's implementation of "
                "DISCA [Zeng2023DISCA]."]

    def _citations(self):
        return ["Zeng2023DISCA"]
