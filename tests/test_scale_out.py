"""Scale-out: picking 4 tomograms with 2 steps running at once, in a Scipion project."""
import os

import pytest
import simulated_project
import tomo.tests.test_base_centralized_layer as tomo_checks

pytestmark = pytest.mark.scipion

SHAPE = (48, 64, 64)


class TestPicker3DScaleOut(tomo_checks.TestBaseCentralizedLayer):

    @classmethod
    def setUpClass(cls):
        simulated_project.start(cls, "picker3d_scale_", n_tomograms=4, seed=90, shape=SHAPE, snr=2.0,
                                species=["barrel"], counts={"barrel": 6})
        simulated_project.train_tiny_model(cls, epochs=4)

    @classmethod
    def tearDownClass(cls):
        simulated_project.end(cls)

    def test_pick_four_tomograms_two_steps_at_once(self):
        from picker3d.engine.formats.readers import read_table
        from picker3d.engine.metrics import evaluate
        from picker3d.protocols import ProtPicker3DImportModel, ProtPicker3DPick
        imp = self.newProtocol(ProtPicker3DImportModel, modelFile=self.model_file)
        self.launchProtocol(imp)
        pick = self.newProtocol(ProtPicker3DPick, inputModel=imp.model, inputTomograms=self.tomos, useGpu=False,
                                numberOfThreads=3, binThreads=1)      # 2 step threads + the main one
        self.launchProtocol(pick)
        out = pick.coordinates
        # 6 barrels in each of the 4 tomograms: the tiny model finds most of them
        self.checkCoordinates(out, expectedSetSize=4 * 6, setSizeTolPercent=0.4, expectedBoxSize=18,
                              expectedSRate=10.0)
        per_tomo = {}
        for c in out.iterCoordinates():
            per_tomo[c.getTomoId()] = per_tomo.get(c.getTomoId(), 0) + 1
        self.assertEqual(sorted(per_tomo), [f"tomo_0{i}" for i in range(4)])      # every tomogram, one set
        for i in range(4):
            r = evaluate(pick.getTable(f"tomo_0{i}"), read_table(os.path.join(self.data, f"tomo_0{i}.tsv")),
                         {"barrel": 17})
            self.assertGreater(r["f1"], 0.6, (i, r))
            self.assertEqual(per_tomo[f"tomo_0{i}"], len(pick.getTable(f"tomo_0{i}")))
        # the per-tomogram steps really overlapped in time
        steps = [s for s in pick.loadSteps() if s.funcName.get() == "pickStep"]
        self.assertEqual(len(steps), 4)
        spans = sorted((s.initTime.datetime(), s.endTime.datetime()) for s in steps)
        overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
        self.assertGreaterEqual(overlaps, 1, spans)

    def test_cancelled_pick_continues_with_the_missing_tomograms(self):
        """Stop a pick run after two tomograms; 'Continue' picks only the other two."""
        import time

        from pyworkflow.protocol.constants import MODE_RESUME

        from picker3d.protocols import ProtPicker3DImportModel, ProtPicker3DPick
        imp = self.newProtocol(ProtPicker3DImportModel, modelFile=self.model_file)
        self.launchProtocol(imp)
        pick = self.newProtocol(ProtPicker3DPick, inputModel=imp.model, inputTomograms=self.tomos, useGpu=False,
                                numberOfThreads=1, binThreads=1)          # one tomogram after the other
        self.proj.launchProtocol(pick, wait=False)
        tsvs = {f"tomo_0{i}": os.path.join(self.proj.getPath(), pick._getExtraPath(f"tomo_0{i}", f"tomo_0{i}.tsv"))
                for i in range(4)}
        t0 = time.time()
        while sum(os.path.exists(p) for p in tsvs.values()) < 2 and time.time() - t0 < 300:
            time.sleep(0.1)
        self.proj.stopProtocol(self.proj.getProtocol(pick.getObjId()))
        written = {k: os.path.getmtime(p) for k, p in tsvs.items() if os.path.exists(p)}
        self.assertGreaterEqual(len(written), 2)
        self.assertLess(len(written), 4, "the run finished before it could be stopped")
        # the newest table may belong to a step that was stopped before Scipion recorded it as
        # finished (that one is redone); the steps before it had finished
        newest = max(written, key=written.get)
        done = {k: t for k, t in written.items() if k != newest}
        pick = self.proj.getProtocol(pick.getObjId())
        self.assertTrue(pick.isAborted())
        self.assertIsNone(getattr(pick, "coordinates", None))      # nothing registered by the stopped run
        pick.runMode.set(MODE_RESUME)
        self.launchProtocol(pick)
        pick = self.proj.getProtocol(pick.getObjId())
        for k, mtime in done.items():
            self.assertEqual(os.path.getmtime(tsvs[k]), mtime, f"{k} was picked again")
        self.assertTrue(all(os.path.exists(p) for p in tsvs.values()))
        self.assertEqual(pick.coordinates.getSize(), sum(len(pick.getTable(k)) for k in tsvs))
