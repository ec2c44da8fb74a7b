"""Train a 3D-ResUNet picker from coordinates (weak labels) on tomograms."""
import os
from enum import Enum

import pyworkflow.protocol.params as params

from ..convert import get_class_names, link_tomogram, tables_from_coordinates, tomograms_by_ts_id
from ..engine.formats.writers import write_table
from ..engine.modelinfo import read_model_info, sidecar_path
from ..engine.options import TRAIN_OPTIONS, option_help, to_argv
from ..objects import Picker3DModel
from .protocol_base import ProtPicker3DBase

MASKS = ["tball", "ball", "cubic", "sphere"]
LOSSES = ["dice+ce", "dice", "ce", "focal"]
FLIPS = [1, 2, 4, 8]
NETWORKS = ["resunet3d", "slice2d"]      # engine.network.NETWORKS (not imported: no torch at GUI start)


class TrainOutputs(Enum):
    model = Picker3DModel


class ProtPicker3DTrain(ProtPicker3DBase):
    """Train picker3d's 3D-ResUNet (residual U-Net with coord-conv and image-pyramid inputs,
    DeepETPicker §A.4) from particle centres turned into weak labels (§A.3).

    Patches are drawn class-balanced around annotated particles plus background patches,
    half of them at dense unannotated places (crowders, membranes, gold). After each
    epoch the network picks the validation tomograms; the best epoch and the thresholds
    that maximise the validation F1 are stored in the model, so picking needs no tuning.
    Training checkpoints every epoch: 'Continue' on an interrupted run resumes from the
    last checkpoint.

    Labels: *complete* (every particle of the classes annotated in the training
    tomograms; unannotated particles are learned as background) or *sparse* (only some
    annotated: positive-unlabeled training on centre heatmaps, the sparse-label paper, which needs the
    class prior or a rough particle count).
    """
    _label = "train"
    ENGINE_LABELS = {"--patch": "Patch size", "--batch": "Batch size", "--channels": "Channels per level",
                     "--lr": "Peak learning rate", "--prior": "Class prior", "--expected-particles":
                     "Particles per tomogram", "--contrastive": "Contrastive weight", "--consistency":
                     "Consistency weight", "--bin": "Binning", "--minutes": "Minutes", "--epochs": "Epochs",
                     "--iters-per-epoch": "Iterations per epoch", "--voxel-size": "Sampling rate"}
    _possibleOutputs = TrainOutputs

    def _defineParams(self, form):
        # the sections follow the option groups of 'picker3d train --help'
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.PointerParam, pointerClass="SetOfCoordinates3D", important=True,
                      label="Training coordinates",
                      help="Annotated particles; their tomograms (those with at least one particle) are "
                           "the training tomograms.")
        form.addParam("validationCoordinates", params.PointerParam, pointerClass="SetOfCoordinates3D",
                      allowsNull=True, label="Validation coordinates (optional)",
                      help="Annotated particles on other tomograms, for choosing the epoch and calibrating "
                           "the thresholds. Every particle annotated (the epoch and thresholds maximise F1) or, with "
                           "sparse annotation, a few per class (thresholds then keep the number of picks the "
                           "particle count implies); told apart by the count. Empty (default): the training "
                           "tomograms calibrate.")
        form.addParam("diameters", params.StringParam, default="", label="Diameters (px)",
                      help="name=PIXELS,... per class (names as in the coordinates: picker3d class names, "
                           "or group ids '1', '2', ...), or one number for all. Empty (default): the box size.")
        form.addParam("labels", params.EnumParam, choices=["complete", "sparse"], default=0,
                      display=params.EnumParam.DISPLAY_HLIST, label="Annotation is",
                      help="complete (default): every particle of these classes in the training tomograms is "
                           "annotated (unannotated density is learned as background). sparse: you picked "
                           "only some of them; the rest is treated as unlabeled, not as background "
                           "(positive-unlabeled learning, the sparse-label paper), and picker3d needs to know roughly how "
                           "many particles there are. Sparse: annotate a few particles (2-5) of every class in each "
                           "training tomogram; validation coordinates may be as sparse, or absent.")
        form.addParam("invertContrast", params.BooleanParam, default=False, label="Invert contrast?",
                      help="Flip the tomograms' contrast before training (the model records the contrast it "
                           "learned; picking checks each tomogram against it). Default: no.")
        form.addParam("maskType", params.EnumParam, choices=MASKS, default=0, label="Weak-label mask",
                      help="tball (default, DeepETPicker's), ball, cubic or sphere.")
        form.addParam("initialModel", params.PointerParam, pointerClass="Picker3DModel", allowsNull=True,
                      label="Start from model (optional)",
                      help="Fine-tune: start from this model's weights instead of random ones. It must have "
                           "the same network, channels and annotation kind; its output layer is kept when "
                           "the classes are the same, else a new one is trained. Empty (default): train "
                           "from scratch.")

        form.addSection(label="Time budget")
        form.addParam("trainBy", params.EnumParam, choices=["time budget", "epochs"], default=0,
                      display=params.EnumParam.DISPLAY_HLIST, label="Train for")
        form.addParam("minutes", params.FloatParam, default=10.0, condition="trainBy == 0",
                      label="Minutes", help="Wall-clock budget (default 10; the one-cycle schedule follows "
                                            "the time).")
        form.addParam("epochs", params.IntParam, default=20, condition="trainBy == 1", label="Epochs",
                      help="Number of epochs (default 20).")
        form.addParam("iterationsPerEpoch", params.IntParam, default=30, expertLevel=params.LEVEL_ADVANCED,
                      label="Iterations per epoch", help="Training steps between two validations (default 30).")

        form.addSection(label="Network")
        form.addParam("binning", params.IntParam, default=0, validators=[params.GE(0)], label="Binning",
                      help="Train and pick on tomograms binned by this factor (coordinates stay in the "
                           "original pixels). 0 (default) = automatic, from the smallest and largest "
                           "diameters and the device (the engine's auto_bin rule, docs/picking.md).")
        line = form.addLine("Network", expertLevel=params.LEVEL_ADVANCED)
        line.addParam("channels", params.StringParam, default="8,16,24,36", label="Channels per level",
                      help="U-Net widths per level (default 8,16,24,36).")
        line.addParam("flips", params.EnumParam, choices=[str(f) for f in FLIPS], default=1, label="Test-time flips",
                      help="Mirrored copies averaged in validation and picking (default 2).")
        form.addParam("patchSize", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Patch size (px)",
                      help="0 (default) = automatic. " + option_help("train", "patch"))
        form.addParam("batchSize", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED, label="Batch size",
                      help="Patches per training step. 0 (default) = automatic: 8 for patches of at most 32 "
                           "voxels with complete annotations, else 4.")
        form.addParam("loss", params.EnumParam, choices=LOSSES, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Loss", help="dice+ce (default, class-weighted), soft Dice (DeepETPicker §A.5), "
                                         "cross-entropy, focal. Complete annotation only.")
        form.addParam("learningRate", params.FloatParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Peak learning rate",
                      help="Peak of the one-cycle schedule. 0 (default) = automatic: 3e-3 for complete "
                           "annotations, 1e-3 for sparse ones (the sparse-label paper §4.2).")

        form.addSection(label="Sparse labels")
        form.addParam("expectedParticles", params.FloatParam, default=0.0, condition="labels == 1",
                      label="Particles per tomogram (about)",
                      help="Rough number of particles of all the classes in one training tomogram, annotated "
                           "or not; it sets the class prior. A factor of 2 off is tolerated; the log warns "
                           "when it contradicts the annotations.")
        form.addParam("prior", params.FloatParam, default=0.0, condition="labels == 1",
                      expertLevel=params.LEVEL_ADVANCED, label="Class prior (fraction of voxels)",
                      help="Instead of the particle count: the fraction of the tomogram's voxels inside "
                           "particles. 0 (default) = from the particle count.")
        form.addParam("contrastive", params.FloatParam, default=0.0, expertLevel=params.LEVEL_ADVANCED,
                      condition="labels == 1", label="Contrastive weight",
                      help="Weight of the sparse-label paper's voxel-level debiased contrastive module (Eq. 8-13; 0.1 "
                           "there). 0 (default) = off. Each training step then runs the network twice.")

        form.addSection(label="Advanced")
        form.addParam("network", params.EnumParam, choices=list(NETWORKS), default=0,
                      expertLevel=params.LEVEL_ADVANCED, label="Network",
                      help="resunet3d (default): 3-D residual U-Net (DeepETPicker's). slice2d: the same U-Net "
                           "in 2-D layers on every z-slice, fused by 3-D layers at the end (the sparse-label paper's "
                           "backbone); it trains on slabs 16 slices thick.")
        form.addParam("consistency", params.FloatParam, default=0.0, expertLevel=params.LEVEL_ADVANCED,
                      label="Consistency weight",
                      help="Weight of the sparse-label paper's consistency term (Eq. 14; 0.1 there): the outputs for a "
                           "batch and for a mirrored, re-noised copy of it should agree. 0 (default) = off. "
                           "Each training step then runs the network twice.")
        form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED, label="Random seed",
                      help="Seed of the patch sampling and the initial weights (default 0).")
        self._addComputeParams(form, gpu=True, threads=2, precision=True)

    # ---- steps ---------------------------------------------------------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.trainStep, needsGPU=self._usesGpu())
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _classes(self):
        return self._coordinateClasses(self.inputCoordinates.get())

    def _classDiameters(self):
        return self._diameterDict(self.diameters.get(), self._classes(), self.inputCoordinates.get().getBoxSize())

    def _writePairs(self, coords, folder):
        """Links to the tomograms and one TSV per tomogram with particles; returns both lists."""
        tomos = tomograms_by_ts_id(coords.getPrecedents())
        tables = tables_from_coordinates(coords)
        vols, tsvs = [], []
        for ts_id in sorted(tables):
            vols.append(link_tomogram(tomos[ts_id], folder))
            tsvs.append(os.path.join(folder, ts_id + ".tsv"))
            write_table(tsvs[-1], tables[ts_id])
        return vols, tsvs

    def convertInputStep(self):
        self._writePairs(self.inputCoordinates.get(), self._getExtraPath("train"))
        val = self.validationCoordinates.get()
        if val is not None:
            self._writePairs(val, self._getExtraPath("validation"))

    def _pairs(self, folder):
        folder = self._getExtraPath(folder)
        if not os.path.isdir(folder):
            return [], []
        vols = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".mrc"))
        return vols, [v[:-4] + ".tsv" for v in vols]

    def getModelFile(self):
        return self._getExtraPath("model.pt")

    def trainStep(self):
        self.runEngine("train", self._trainArgs())

    def _trainArgs(self):
        """The engine's command line for the prepared training (and validation) pairs."""
        vols, tsvs = self._pairs("train")
        vvols, vtsvs = self._pairs("validation")
        diam = ",".join(f"{c}={d:g}" for c, d in self._classDiameters().items())
        q = self._quote
        args = [f"--tomograms {' '.join(q(v) for v in vols)}", f"--coords {' '.join(q(t) for t in tsvs)}",
                *([f"--val-tomograms {' '.join(q(v) for v in vvols)}", f"--val-coords {' '.join(q(t) for t in vtsvs)}"]
                  if vvols else []),
                f"--diameters {diam}", f"--out {q(self.getModelFile())}", self._deviceArg(),
                *to_argv(TRAIN_OPTIONS, self._engineOptions())]
        if os.path.exists(self.getModelFile() + ".ckpt"):
            args.append("--resume")   # 'Continue' after an interruption: pick up the last checkpoint
        return " ".join(args)

    def _engineOptions(self):
        """The form as the engine's training options (picker3d.engine.options.train): what the
        command line is made from and what _validate checks."""
        sparse = self.labels.get() == 1
        init = self.initialModel.get()
        # Scipion's sampling rate, not the files' headers (which may have none), when the training
        # and validation tomograms share it
        rates = {round(c.getPrecedents().getSamplingRate(), 4) for c in (self.inputCoordinates.get(),
                                                                       self.validationCoordinates.get()) if c}
        return {"mask_type": MASKS[self.maskType.get()], "bin": self.binning.get() or "auto",
                "channels": self.channels.get(), "flips": FLIPS[self.flips.get()],
                "iters_per_epoch": self.iterationsPerEpoch.get(), "lr": self.learningRate.get() or "auto",
                "seed": self.seed.get(), "precision": self._precision(), "network": NETWORKS[self.network.get()],
                "minutes": self.minutes.get() if self.trainBy.get() == 0 else None,
                "epochs": self.epochs.get() if self.trainBy.get() == 1 else None,
                "patch": self.patchSize.get() or "auto", "batch": self.batchSize.get() or "auto",
                "consistency": self.consistency.get(), "labels": "sparse" if sparse else "complete",
                "loss": "pu" if sparse else LOSSES[self.loss.get()],
                "contrastive": self.contrastive.get() if sparse else 0.0,
                "prior": (self.prior.get() or None) if sparse else None,
                "expected_particles": (self.expectedParticles.get() or None) if sparse and not self.prior.get()
                else None,
                "init": init.getFileName() if init is not None else None,
                "invert": bool(getattr(self, "invertContrast", None) is not None and self.invertContrast.get()),
                "voxel_size": next(iter(rates)) if len(rates) == 1 and next(iter(rates)) > 0 else None}

    def createOutputStep(self):
        meta = read_model_info(self.getModelFile())
        model = Picker3DModel(filename=self.getModelFile())
        model.setFromMeta(meta)
        model.setSamplingRate(self.inputCoordinates.get().getPrecedents().getSamplingRate())
        self._defineOutputs(**{self._possibleOutputs.model.name: model})
        self._defineSourceRelation(self.inputCoordinates, model)
        if self.initialModel.get() is not None:
            self._defineSourceRelation(self.initialModel, model)

    # ---- info ----------------------------------------------------------------------
    def getHistory(self):
        """Per-epoch training history from the model file (for the viewer)."""
        path = self._absPath(self.getModelFile())
        if not os.path.exists(path) or not os.path.exists(sidecar_path(path)):
            return []
        return read_model_info(path).get("history", [])

    def _validate(self):
        coords = self.inputCoordinates.get()
        errors = self._emptySetErrors(coords, "Training coordinates")
        if errors:
            return errors
        try:
            classes = self._classes()
            self._classDiameters()
        except ValueError as exc:
            return [str(exc)]
        val = self.validationCoordinates.get()
        if val is not None:
            if val.getSize() == 0:
                errors.append("The validation coordinate set is empty.")
            else:
                vclasses = set(get_class_names(val) or
                               {c for t in tables_from_coordinates(val).values() for c in t.class_names()})
                missing = sorted(set(classes) - vclasses)
                if missing:
                    errors.append(f"Validation coordinates lack class(es) {', '.join(missing)}.")
            sr, vsr = coords.getSamplingRate(), val.getSamplingRate()
            if sr and vsr and abs(sr - vsr) / sr > 0.01:
                errors.append(f"Validation coordinates are at {vsr:g} Å/px, training ones at {sr:g} Å/px.")
        init = self.initialModel.get()
        if init is not None and not os.path.exists(self._absPath(init.getFileName())):
            errors.append(f"Start from model: the model file {init.getFileName()} is missing.")
        # the engine's own checks of every option (picker3d.engine.options.train)
        return errors + self._engineProblems("train")

    def _summary(self):
        out = getattr(self, self._possibleOutputs.model.name, None)
        if out is None:
            return ["Training not finished yet."]
        hist = self.getHistory()
        lines = [f"Model: {out}", f"{len(hist)} epochs."]
        if out.getBestValF1() is not None:
            lines.append(f"Best validation F1 {out.getBestValF1():.3f}.")
        return lines

    def _methods(self):
        return ["Particles were picked with picker3d's 3D-ResUNet trained on weak labels, following "
                "DeepETPicker [Liu2024DeepETPicker] and DeepFinder [Moebel2021DeepFinder]."]

    def _citations(self):
        return ["Liu2024DeepETPicker", "Moebel2021DeepFinder"]
