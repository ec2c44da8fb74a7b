"""Scipion protocols in real projects: import annotations, masks, train, pick, import model.

Each class is one Scipion test project (``setupTestProject``) on tiny simulated data;
protocols run as Scipion runs them (a separate process per protocol).
"""
import os
import shutil

import numpy as np
import pytest
import simulated_project
import tomo.tests.test_base_centralized_layer as tomo_checks

pytestmark = pytest.mark.scipion

SHAPE = (48, 80, 80)     # z y x
DIAM = 17                 # barrel
SAMPLING = 10.0


class TestPicker3DProtocols(tomo_checks.TestBaseCentralizedLayer):
    """import tomograms → import annotations → masks → train → pick → import model."""

    @classmethod
    def setUpClass(cls):
        simulated_project.start(cls, "picker3d_prot_", sampling=SAMPLING, n_tomograms=2, seed=60, shape=SHAPE,
                                snr=2.0, species=["barrel"], counts={"barrel": 8})
        # annotations of the training tomogram only (as a user's hand-picks would be)
        os.makedirs(os.path.join(cls.data, "annotations"))
        shutil.copy(os.path.join(cls.data, "tomo_00.tsv"), os.path.join(cls.data, "annotations", "tomo_00.tsv"))

    @classmethod
    def tearDownClass(cls):
        simulated_project.end(cls)

    # ---- helpers ---------------------------------------------------------------------
    def _importAnnotations(self, **kw):
        from picker3d.protocols import ProtPicker3DImportAnnotations
        args = dict(inputTomograms=self.tomos, filesPath=os.path.join(self.data, "annotations"),
                    filesPattern="*.tsv", boxSize=DIAM + 1)
        args.update(kw)
        prot = self.newProtocol(ProtPicker3DImportAnnotations, **args)
        self.launchProtocol(prot)
        return prot

    def _gt(self, i):
        from picker3d.engine.formats.readers import read_table
        return read_table(os.path.join(self.data, f"tomo_0{i}.tsv"))

    def _positions(self, coord_set):
        from tomo.constants import BOTTOM_LEFT_CORNER
        return np.array([c.getPosition(BOTTOM_LEFT_CORNER) for c in coord_set.iterCoordinates()])

    # ---- tests -------------------------------------------------------------------------
    def test_import_annotations_round_trip(self):
        prot = self._importAnnotations()
        out = prot.coordinates
        gt = self._gt(0)
        self.checkCoordinates(out, expectedSetSize=len(gt), expectedBoxSize=DIAM + 1, expectedSRate=SAMPLING)
        pos = self._positions(out)
        # the same particles, to 0.01 voxel, in Scipion's bottom-left-corner convention
        a = pos[np.lexsort(pos.T[::-1])]
        b = gt.xyz[np.lexsort(gt.xyz.T[::-1])]
        np.testing.assert_allclose(a, b, atol=0.01)
        self.assertEqual({c.getTomoId() for c in out.iterItems()}, {"tomo_00"})
        self.assertEqual({c.getGroupId() for c in out.iterItems()}, {1})
        from picker3d.convert import get_class_names
        self.assertEqual(get_class_names(out), ["barrel"])

    def test_import_text_zyx_one_based_other_sampling(self):
        # zyx columns, 1-based indices, picked at half the pixel size (coordinates x2)
        folder = os.path.join(self.data, "txt")
        os.makedirs(folder, exist_ok=True)
        gt = self._gt(0)
        rows = [f"{2 * (z + 1) - 1:.3f} {2 * (y + 1) - 1:.3f} {2 * (x + 1) - 1:.3f}" for x, y, z in gt.xyz]
        # origin 1 is applied in the coordinates' own pixels: (2(c+1)-1) - 1 = 2c, then / 2 = c
        with open(os.path.join(folder, "tomo_00.txt"), "w") as fh:
            fh.write("\n".join(rows) + "\n")
        prot = self._importAnnotations(filesPath=folder, filesPattern="*.txt", columnOrder="zyx", origin=1,
                                       coordsSamplingRate=SAMPLING / 2, className="barrel")
        pos = self._positions(prot.coordinates)
        a = pos[np.lexsort(pos.T[::-1])]
        b = gt.xyz[np.lexsort(gt.xyz.T[::-1])]
        np.testing.assert_allclose(a, b, atol=0.01)

    def test_import_annotations_validation_messages(self):
        from picker3d.protocols import ProtPicker3DImportAnnotations
        prot = self.newProtocol(ProtPicker3DImportAnnotations, inputTomograms=self.tomos,
                                filesPath=os.path.join(self.data, "nowhere"), filesPattern="*.tsv")
        self.assertIn("does not exist", " ".join(prot.validate()))
        # files matching no tomogram: tests/test_bad_input.py (tsId without tomogram)

    def test_masks(self):
        import mrcfile

        from picker3d.protocols import ProtPicker3DMasks
        coords = self._importAnnotations().coordinates
        prot = self.newProtocol(ProtPicker3DMasks, inputCoordinates=coords, maskType=0)
        self.launchProtocol(prot)
        masks = prot.tomoMasks
        self.assertEqual(masks.getSize(), 1)
        m = masks.getFirstItem()
        self.assertEqual(m.getTsId(), "tomo_00")
        self.assertEqual(m.getDimensions(), (SHAPE[2], SHAPE[1], SHAPE[0]))
        with mrcfile.open(m.getFileName()) as f:
            data = f.data
        gt = self._gt(0)
        for x, y, z in np.round(gt.xyz).astype(int):
            self.assertEqual(data[z, y, x], 1)
        self.assertGreater((data == 0).mean(), 0.5)
        empty = self.newProtocol(ProtPicker3DMasks, inputCoordinates=coords, diameters="barrel=-3")
        self.assertIn("positive", " ".join(empty.validate()))

    # the trained model and the pick run are shared by the tests below: made by the first
    # test that needs them, so each protocol's failure is named by its own test
    _train = _pick = None

    def _trained(self):
        from picker3d.protocols import ProtPicker3DTrain
        cls = type(self)
        if cls._train is None:
            coords = self._importAnnotations().coordinates
            train = self.newProtocol(ProtPicker3DTrain, inputCoordinates=coords, diameters=f"barrel={DIAM}",
                                     trainBy=1, epochs=4, iterationsPerEpoch=10, patchSize=32, batchSize=2,
                                     channels="8,16,24,36", learningRate=5e-3, useGpu=False)
            self.launchProtocol(train)
            cls._train = train
        return cls._train

    def _picked(self):
        from picker3d.protocols import ProtPicker3DPick
        cls = type(self)
        if cls._pick is None:
            pick = self.newProtocol(ProtPicker3DPick, inputModel=self._trained().model, inputTomograms=self.tomos,
                                    splitClasses=True, saveScoreMaps=True, useGpu=False)
            self.launchProtocol(pick)
            cls._pick = pick
        return cls._pick

    def test_train(self):
        train = self._trained()
        model = train.model
        self.assertEqual(model.getClassNames(), ["barrel"])
        self.assertEqual(model.getDiameters(), {"barrel": DIAM})
        self.assertAlmostEqual(model.getSamplingRate(), SAMPLING)
        self.assertEqual(len(train.getHistory()), 4)

    def test_train_fine_tuning_starts_from_the_model(self):
        # the engine starts from its weights (one step at a negligible rate leaves them as they
        # were) and the new model records where it started
        import torch

        from picker3d.engine.modelfile import load_model
        from picker3d.protocols import ProtPicker3DTrain
        model = self._trained().model
        tuned = self.newProtocol(ProtPicker3DTrain, inputCoordinates=self._importAnnotations().coordinates,
                                 diameters=f"barrel={DIAM}", initialModel=model, trainBy=1, epochs=1,
                                 iterationsPerEpoch=1, patchSize=32, batchSize=2, channels="8,16,24,36",
                                 learningRate=1e-9, useGpu=False)
        self.launchProtocol(tuned)
        src, dst = (load_model(p) for p in (model.getFileName(), tuned.model.getFileName()))
        self.assertEqual(dst[1]["init"]["path"], os.path.abspath(model.getFileName()))
        self.assertTrue(dst[1]["init"]["output_layer_kept"])
        for (k, a), (_, b) in zip(src[0].named_parameters(), dst[0].named_parameters()):
            self.assertTrue(torch.allclose(a, b, atol=1e-5), k)

    def test_pick(self):
        from tomo.constants import BOTTOM_LEFT_CORNER

        from picker3d.engine.metrics import evaluate
        pick = self._picked()
        out = pick.coordinates
        # 8 barrels per tomogram: the trained model finds most of them on both
        self.checkCoordinates(out, expectedBoxSize=18, expectedSRate=SAMPLING, setSizeTolPercent=0.4,
                              expectedSetSize=2 * 8)
        self.assertEqual(out.getSize(), sum(len(pick.getTable(t)) for t in ("tomo_00", "tomo_01")))
        self.assertEqual(pick.coordinates_barrel.getSize(), out.getSize())
        self.assertEqual(pick.scoreMaps.getSize(), 2)
        # the output set equals the engine's table, to 0.01 voxel, in bottom-left-corner convention
        for ts_id in ("tomo_00", "tomo_01"):
            table = pick.getTable(ts_id)
            tomo = {t.getTsId(): t.clone() for t in self.tomos}[ts_id]   # set iteration reuses one object
            pos = np.array([c.getPosition(BOTTOM_LEFT_CORNER) for c in out.iterCoordinates(volume=tomo)])
            self.assertEqual(len(pos), len(table))
            np.testing.assert_allclose(pos[np.lexsort(pos.T[::-1])],
                                       table.xyz[np.lexsort(table.xyz.T[::-1])], atol=0.01)
            self.assertTrue(all(c.getScore() > 0 for c in out.iterCoordinates(volume=tomo)))
        # held-out tomogram (never annotated): picks match its ground truth
        r = evaluate(pick.getTable("tomo_01"), self._gt(1), {"barrel": DIAM})
        self.assertGreater(r["f1"], 0.7, r)

    def test_train_and_pick_viewers_render(self):
        # training curves; picks over slices
        from PIL import Image

        from picker3d.viewers import Picker3DPickViewer, Picker3DTrainViewer
        for viewer_cls, prot in ((Picker3DTrainViewer, self._trained()), (Picker3DPickViewer, self._picked())):
            views = viewer_cls(project=self.proj, protocol=prot)._visualize(prot)
            self.assertGreaterEqual(len(views), 1)
            png = os.path.join(self.data, f"{viewer_cls.__name__}.png")
            views[0].savefig(png)
            self.assertGreater(np.asarray(Image.open(png).convert("L"), dtype=float).std(), 10)

    def test_evaluate(self):
        """The picks against the ground truth of both tomograms: the engine's numbers."""
        from PIL import Image

        from picker3d.engine.metrics import evaluate
        from picker3d.protocols import ProtPicker3DEvaluate
        from picker3d.viewers import Picker3DEvaluateViewer
        pick = self._picked()
        out = pick.coordinates
        ref = self._importAnnotations(filesPath=self.data, filesPattern="tomo_0?.tsv").coordinates
        ev = self.newProtocol(ProtPicker3DEvaluate, inputCoordinates=out, referenceCoordinates=ref,
                              diameters=f"barrel={DIAM}")
        self.launchProtocol(ev)
        res = ev.getResults()
        for ts_id in ("tomo_00", "tomo_01"):
            engine = evaluate(pick.getTable(ts_id), self._gt(int(ts_id[-1])), {"barrel": DIAM})
            self.assertAlmostEqual(res["per_tomogram"][ts_id]["f1"], engine["f1"], places=9)
            self.assertAlmostEqual(res["per_tomogram"][ts_id]["ap"], engine["ap"], places=9)
        o = res["overall"]
        self.assertEqual(ev.truePositives.getSize(), o["class_aware"]["tp"])
        self.assertEqual(ev.falsePositives.getSize(), o["class_aware"]["fp"])
        self.assertEqual(ev.missed.getSize(), o["class_aware"]["fn"])
        self.assertEqual(o["class_aware"]["tp"], o["tp"])       # one class: class-aware = localisation
        self.assertEqual(o["tp"] + o["fp"], out.getSize())
        self.assertEqual(o["tp"] + o["fn"], ref.getSize())
        self.assertIn(f"F1 {o['f1']:.3f}", " ".join(ev.summary()))
        view = Picker3DEvaluateViewer(project=self.proj, protocol=ev)._visualize(ev)[0]
        png = os.path.join(self.data, "evaluate.png")
        view.savefig(png)
        self.assertGreater(np.asarray(Image.open(png).convert("L"), dtype=float).std(), 10)

    def test_evaluate_against_another_class(self):
        """Well localised picks, yet no class-aware match: the output sets and the summary
        follow the class-aware matching, and class-agnostic evaluation (Match classes? = No)
        counts the same picks as hits."""
        from picker3d.protocols import ProtPicker3DEvaluate
        pick = self._picked()
        other = self._importAnnotations(className="ribosome").coordinates
        n_picks_00 = len(pick.getTable("tomo_00"))
        for per_class in (True, False):
            ev2 = self.newProtocol(ProtPicker3DEvaluate, inputCoordinates=pick.coordinates,
                                   referenceCoordinates=other, diameters=str(DIAM), perClass=per_class)
            self.launchProtocol(ev2)
            o2 = ev2.getResults()["overall"]
            self.assertGreater(o2["tp"], 0.7 * other.getSize(), o2)
            tp = 0 if per_class else o2["tp"]
            self.assertEqual(ev2.truePositives.getSize(), tp)
            self.assertEqual(ev2.falsePositives.getSize(), n_picks_00 - tp)
            self.assertEqual(ev2.missed.getSize(), other.getSize() - tp)
            self.assertIn(f"{tp} true positives", " ".join(ev2.summary()))

    def test_import_model(self):
        from picker3d.protocols import ProtPicker3DImportModel
        model = self._trained().model
        imp = self.newProtocol(ProtPicker3DImportModel, modelFile=model.getFileName())
        self.launchProtocol(imp)
        self.assertEqual(imp.model.getClassNames(), ["barrel"])
        self.assertNotEqual(os.path.abspath(imp.model.getFileName()), os.path.abspath(model.getFileName()))

    def test_train_validation_messages(self):
        from tomo.objects import SetOfCoordinates3D

        from picker3d.protocols import ProtPicker3DMasks, ProtPicker3DTrain
        coords = self._importAnnotations().coordinates
        # validation coordinates whose only class is another one
        other = self._importAnnotations(className="ribosome").coordinates
        prot = self.newProtocol(ProtPicker3DTrain, inputCoordinates=coords, validationCoordinates=other)
        self.assertIn("Validation coordinates lack class(es) barrel", " ".join(prot.validate()))
        prot = self.newProtocol(ProtPicker3DTrain, inputCoordinates=coords, patchSize=30, channels="8,x")
        msg = " ".join(prot.validate())
        self.assertIn("Patch size (--patch): 30 is not a multiple of 8", msg)
        self.assertIn("Channels per level (--channels): '8,x' must be comma-separated integers", msg)
        prot = self.newProtocol(ProtPicker3DTrain, inputCoordinates=coords, labels=1)
        self.assertIn("Class prior (--prior): sparse labels need the class prior", " ".join(prot.validate()))
        prot = self.newProtocol(ProtPicker3DTrain, inputCoordinates=coords, labels=1, prior=3.0)
        self.assertIn("Class prior (--prior): 3 must be a fraction", " ".join(prot.validate()))
        prot = self.newProtocol(ProtPicker3DTrain, inputCoordinates=coords, learningRate=-0.01, consistency=-1.0,
                                contrastive=-2.0)
        msg = " ".join(prot.validate())
        self.assertIn("Peak learning rate (--lr): -0.01 must be above 0 (or auto)", msg)
        self.assertIn("Consistency weight (--consistency): -1 must be at least 0 (0 = off)", msg)
        # an empty coordinate set is named in the message
        empty = SetOfCoordinates3D.create(self.proj.getTmpPath(), template="emptycoords%s.sqlite")
        empty.setObjLabel("no picks")
        for cls in (ProtPicker3DTrain, ProtPicker3DMasks):
            prot = self.newProtocol(cls)
            prot.inputCoordinates.set(empty)
            self.assertIn("no picks is empty", " ".join(prot.validate()))

    def test_train_command_line_carries_the_advanced_options(self):
        """What the form says reaches the engine: the protocol's command line parses with the
        engine's own parser into the values set in the form."""
        import shlex

        from picker3d.engine.cli import build_parser
        from picker3d.protocols import ProtPicker3DTrain
        coords = self._importAnnotations().coordinates
        prot = self.newProtocol(ProtPicker3DTrain, inputCoordinates=coords, diameters=f"barrel={DIAM}",
                                labels=1, expectedParticles=40, consistency=0.1, network=1, learningRate=0.002,
                                contrastive=0.2, precision=1,
                                patchSize=48, batchSize=6, seed=3, trainBy=1, epochs=7)
        prot._pairs = lambda folder: (["t0.mrc"], ["t0.tsv"]) if folder == "train" else ([], [])
        a = build_parser().parse_args(["train"] + shlex.split(prot._trainArgs()))
        self.assertEqual((a.network, a.consistency, float(a.lr), a.patch, a.batch, a.seed, a.epochs),
                         ("slice2d", 0.1, 0.002, "48", "6", 3, 7))
        self.assertEqual((a.labels, a.loss, a.expected_particles, a.prior, a.contrastive, a.precision),
                         ("sparse", "pu", 40.0, None, 0.2, "fp32"))
        # sparse labels, no validation set: none is passed (the engine then sets count thresholds on
        # the training tomograms and keeps the last epoch)
        self.assertEqual(([os.path.basename(p) for p in a.tomograms], a.val_tomograms), (["t0.mrc"], []))
        # the defaults leave the automatic choices to the engine
        prot = self.newProtocol(ProtPicker3DTrain, inputCoordinates=coords, diameters=f"barrel={DIAM}")
        prot._pairs = lambda folder: (["t0.mrc"], ["t0.tsv"]) if folder == "train" else ([], [])
        a = build_parser().parse_args(["train"] + shlex.split(prot._trainArgs()))
        self.assertEqual((a.network, a.consistency, a.contrastive, a.lr, a.patch, a.batch, a.labels, a.minutes,
                          a.precision), ("resunet3d", 0.0, 0.0, "auto", "auto", "auto", "complete", 10.0, "auto"))
        # complete labels without validation set: the engine calibrates on the training tomograms
        self.assertEqual(a.val_tomograms, [])

    def test_pick_resamples_other_sampling_and_refuses_far_off(self):
        from tomo.protocols import ProtImportTomograms

        from picker3d.objects import Picker3DModel
        from picker3d.protocols import ProtPicker3DPick
        imp = self.newProtocol(ProtImportTomograms, filesPath=self.data, filesPattern="tomo_00.mrc",
                               samplingRate=2 * SAMPLING)
        self.launchProtocol(imp)
        model = Picker3DModel(filename=os.path.join(self.data, "none.pt"))
        model.setClassNames(["barrel"])
        model.setDiameters({"barrel": DIAM})
        model.setSamplingRate(SAMPLING)
        pick = self.newProtocol(ProtPicker3DPick, inputTomograms=imp.Tomograms)
        pick.inputModel.set(model)
        # twice the model's voxel size: the engine resamples, nothing to refuse
        self.assertNotIn("Å/px", " ".join(pick.validate()))
        model.setSamplingRate(SAMPLING / 2.5)
        msg = " ".join(pick.validate())
        self.assertIn("20 Å/px", msg)
        self.assertIn("trained at 4 Å/px", msg)
        pick.zRange.set("10 to 20")
        self.assertIn("is not auto, all or Z0-Z1", " ".join(pick.validate()))


def test_viewer_figures_render_to_png(tmp_path):
    """Both viewers' figures render to non-empty PNGs (training curves; picks over slices)."""
    from picker3d.engine.formats.table import CoordTable
    from picker3d.engine.simulation.dataset import simulate_tomogram
    from picker3d.viewers import plot_picks, plot_training
    history = [{"epoch": i + 1, "loss": 1.0 / (i + 1), "val_f1": 0.2 * i, "val_class_f1": 0.15 * i} for i in range(5)]
    s = simulate_tomogram(shape=(32, 64, 64), seed=1, snr=1.0, species=["barrel"], counts={"barrel": 3},
                          crowders=0, vesicles=0, membranes=0, gold=0)
    table = CoordTable.from_rows(s["rows"])
    table.scores = np.linspace(0.3, 0.9, len(table))
    for name, plotter in (("train", plot_training(history)),
                          ("picks", plot_picks(s["tomogram"], table, ["barrel"], {"barrel": 17}, threshold=0.5))):
        path = tmp_path / f"{name}.png"
        plotter.savefig(str(path))
        from PIL import Image
        img = np.asarray(Image.open(path).convert("L"), dtype=float)
        assert img.shape[0] > 100 and img.shape[1] > 300
        assert img.std() > 10, f"{name}: blank image"   # axes, curves, slices: not a flat picture


def test_training_viewer_marks_the_epoch_training_keeps():
    """Of epochs with equal validation F1 training keeps the later one; the curve marks that one."""
    from picker3d.engine.modelinfo import kept_summary
    from picker3d.viewers import plot_training
    history = [{"epoch": i + 1, "loss": 1.0, "val_f1": f, "val_class_f1": 0.5}
               for i, f in enumerate([0.2, 0.5, 0.5, 0.3])]
    labels = plot_training(history).figure.axes[1].get_legend_handles_labels()[1]
    assert "kept: epoch 3" in labels
    assert kept_summary(history, None).startswith("kept epoch 3 of 4")


def test_wizard_diameters_from_box_size():
    from picker3d.wizards import diameters_from_coordinates

    class FakeSet:
        def getBoxSize(self):
            return 24

        _picker3dClasses = None

    import pyworkflow.object as pwobj
    s = FakeSet()
    s._picker3dClasses = pwobj.String('["large", "tiny"]')
    assert diameters_from_coordinates(s) == "large=24,tiny=24"
