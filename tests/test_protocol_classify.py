"""The classify-picks protocol (DISCA) in a real Scipion project."""
import os

import numpy as np
import pytest
import simulated_project
import tomo.tests.test_base_centralized_layer as tomo_checks

pytestmark = pytest.mark.scipion

SAMPLING = 10.0
BOX = 28


class TestPicker3DClassify(tomo_checks.TestBaseCentralizedLayer):
    """import tomograms → import annotations (two species) → classify picks."""

    @classmethod
    def setUpClass(cls):
        simulated_project.start(cls, "picker3d_cls_", pattern="tomo_00.mrc", sampling=SAMPLING, annotate="annotations",
                                box=BOX, n_tomograms=1, seed=7, shape=(56, 128, 128), snr=1.0,
                                species=["large", "shell"], counts={"large": 14, "shell": 18})

    @classmethod
    def tearDownClass(cls):
        simulated_project.end(cls)

    def test_classify_picks_outputs(self):
        from tomo.constants import BOTTOM_LEFT_CORNER

        from picker3d.convert import CLASS_ATTR
        from picker3d.engine.classification.mixture import clustering_scores
        from picker3d.protocols import ProtPicker3DClassify
        from picker3d.protocols.protocol_classify import PICKED_CLASS_ATTR, POSTERIOR_ATTR
        n = self.coords.getSize()
        prot = self.newProtocol(ProtPicker3DClassify, inputCoordinates=self.coords, binning=2, kMin=2, kMax=4,
                                iterations=3, useGpu=False, outputClasses=True)
        self.launchProtocol(prot)
        out = prot.coordinates
        self.checkCoordinates(out, expectedSetSize=n, expectedBoxSize=BOX, expectedSRate=SAMPLING)
        before = {c.getObjId(): (c.getPosition(BOTTOM_LEFT_CORNER), getattr(c, CLASS_ATTR).get())
                  for c in self.coords.iterCoordinates()}
        truth, labels, posts = [], [], []
        for c in out.iterCoordinates():
            truth.append(getattr(c, PICKED_CLASS_ATTR).get())
            labels.append(c.getGroupId())
            posts.append(getattr(c, POSTERIOR_ATTR).get())
        # the clusters separate the two species
        scores = clustering_scores(truth, labels)
        self.assertGreaterEqual(scores["homogeneity"], 0.8, scores)
        self.assertTrue(all(0.0 < p <= 1.0 for p in posts))
        # positions are the input's, to 0.01 voxel (same particles, only the class changes)
        a = np.array(sorted(p for p, _ in before.values()))
        b = np.array(sorted(c.getPosition(BOTTOM_LEFT_CORNER) for c in out.iterCoordinates()))
        np.testing.assert_allclose(a, b, atol=0.01)
        # one set per class, sizes adding up; one average per class on disk
        k = max(labels)
        per_class = [getattr(prot, f"coordinates_class_{i:02d}") for i in range(1, k + 1)]
        self.assertEqual(sum(s.getSize() for s in per_class), n)
        self.assertEqual([s.getSize() for s in per_class], [labels.count(i) for i in range(1, k + 1)])
        self.assertEqual(prot.averages.getSize(), k)
        from picker3d.engine.formats.mrc import read_volume
        for avg in prot.averages:
            vol, _ = read_volume(prot._absPath(avg.getFileName()))
            self.assertEqual(vol.shape, (BOX, BOX, BOX))
        self.assertIn(f"{n} particles in {k} classes", " ".join(prot.summary()))
        # sub-tomograms (one file per pick, coordinates = the input picks) and their classes,
        # checked with tomo's own assertions; class sizes are the cluster sizes
        self.checkExtractedSubtomos(self.coords, prot.subtomograms, expectedSetSize=n, expectedBoxSize=BOX,
                                    expectedSRate=SAMPLING)
        self.checkClasses(prot.classes, expectedSRate=SAMPLING, expectedSetSize=k)
        self.assertEqual(sorted(c.getSize() for c in prot.classes), sorted(labels.count(i) for i in range(1, k + 1)))
        for cls in prot.classes:
            self.assertEqual(os.path.basename(cls.getRepresentative().getFileName()), f"class_{cls.getObjId():02d}.mrc")
        # the members were aligned: each sub-tomogram carries its alignment as a transform
        # (rotation from rot tilt psi, shift in voxels), every class of two or more a resolution
        _, info = prot.getResult()
        aligned = [r["class"] for r in info["resolution"]]
        self.assertEqual(aligned, [i for i in range(1, k + 1) if labels.count(i) >= 2])
        with_transform = [s for s in prot.subtomograms if s.hasTransform()]
        self.assertEqual(len(with_transform), sum(labels.count(i) for i in aligned))
        m = with_transform[0].getTransform().getMatrix()
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-6)
        self.assertIn("FSC 0.143 at", " ".join(prot.summary()))
        # the viewer renders the gallery, the clustering plots and the FSC curves
        from PIL import Image

        from picker3d.viewers import Picker3DClassifyViewer
        views = Picker3DClassifyViewer(project=self.proj, protocol=prot)._visualize(prot)
        self.assertEqual(len(views), 3)
        for i, view in enumerate(views):
            png = os.path.join(self.data, f"classify_view_{i}.png")
            view.savefig(png)
            self.assertGreater(np.asarray(Image.open(png).convert("L"), dtype=float).std(), 10)
        # the input set is untouched
        after = {c.getObjId(): (c.getPosition(BOTTOM_LEFT_CORNER), getattr(c, CLASS_ATTR).get())
                 for c in self.coords.iterCoordinates()}
        self.assertEqual(before, after)

    def test_classify_validation_messages(self):
        from picker3d.protocols import ProtPicker3DClassify
        prot = self.newProtocol(ProtPicker3DClassify, inputCoordinates=self.coords, kMin=5, kMax=3)
        self.assertIn("Number of classes (min, max) (--k-range): '5-3' needs 1 <= MIN <= MAX", " ".join(prot.validate()))
        prot = self.newProtocol(ProtPicker3DClassify, inputCoordinates=self.coords, boxSize=16, binning=2)
        self.assertIn("Box size (--box): 16 voxels binned by 2", " ".join(prot.validate()))

    def test_relion_binary_reconstructs_scipion_subtomograms(self):
        """The protocol's sub-tomograms, with their transforms, written by Relion-tomo's RELION 3
        sub-tomogram writer (what its protocols feed RELION): relion_reconstruct of each class
        correlates >= 0.9 with picker3d's average, better than with the angles zeroed. RELION 3.1
        reads a RELION 3.0 file's pixel origins of 3-D particles as zero: the file goes through
        RELION's own relion_convert_star first, as a RELION 3.1 user does."""
        import subprocess

        import starfile
        from reliontomo.constants import RELION_30_TOMO_LABELS
        from reliontomo.convert import createWriterTomo30
        from test_relion_binary import correlation, reconstruct, relion_reconstruct

        from picker3d.engine.formats.mrc import read_volume
        from picker3d.protocols import ProtPicker3DClassify
        prot = self.newProtocol(ProtPicker3DClassify, inputCoordinates=self.coords, binning=2, kMin=2, kMax=2,
                                iterations=2, splitSeparation=0.0, useGpu=False, outputClasses=True)
        self.launchProtocol(prot)
        star = prot._getExtraPath("relion3_particles.star")
        cwd = prot.getProject().getPath()
        old = prot._getExtraPath("relion30_particles.star")
        createWriterTomo30(starHeaders=RELION_30_TOMO_LABELS).subtomograms2Star(prot.subtomograms, old)
        relion_reconstruct()        # installs RELION when missing
        r = subprocess.run(["relion_convert_star", "--i", old, "--o", star], cwd=cwd, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        table = starfile.read(os.path.join(cwd, star), always_dict=True)
        # the converter leaves the optics group without voltage, Cs and amplitude contrast when
        # the 3.0 file has none; relion_reconstruct then stops ("trying to read image with
        # empty file name"): the user adds their microscope's
        table["optics"] = table["optics"].assign(rlnVoltage=300.0, rlnSphericalAberration=2.7,
                                                 rlnAmplitudeContrast=0.1)
        starfile.write(table, os.path.join(cwd, star), overwrite=True)
        block = table["particles"]
        self.assertGreater(float(np.abs(block["rlnOriginXAngst"]).max()), 0.5)
        self.assertEqual(len(block), self.coords.getSize())
        self.assertGreater(float(np.abs(block["rlnAngleTilt"]).max()), 1.0)
        classes = {cls.getObjId(): {s.getFileName() for s in cls} for cls in prot.classes}
        flat = prot._getExtraPath("zero_angles.star")
        starfile.write(dict(table, **{list(table)[-1]: block.assign(rlnAngleRot=0.0, rlnAngleTilt=0.0,
                                                                      rlnAnglePsi=0.0)}),
                       os.path.join(cwd, flat), overwrite=True)
        for cls, members in classes.items():
            if len(members) < 4:
                continue
            # relion_reconstruct's --class reads rlnClassNumber, which the RELION 3 writer leaves
            # out: reconstruct each class from its own rows
            for name, source in (("aligned", star), ("zero", flat)):
                data = starfile.read(os.path.join(cwd, source), always_dict=True)
                key = list(data)[-1]
                data[key] = data[key][data[key]["rlnImageName"].isin(members)]
                self.assertEqual(len(data[key]), len(members))
                starfile.write(data, os.path.join(cwd, prot._getExtraPath(f"{name}_{cls}.star")), overwrite=True)
            average = read_volume(os.path.join(cwd, prot.getAverageFile(cls)))[0]
            rec = reconstruct(prot._getExtraPath(f"aligned_{cls}.star"), prot._getExtraPath(f"rec_{cls}.mrc"),
                              cwd=cwd)
            zero = reconstruct(prot._getExtraPath(f"zero_{cls}.star"), prot._getExtraPath(f"zero_{cls}.mrc"),
                               cwd=cwd)
            cc, cc0 = correlation(rec, average), correlation(zero, average)
            self.assertGreaterEqual(cc, 0.9, (cls, cc, cc0))
            self.assertLess(cc0, cc - 0.1, (cls, cc, cc0))
