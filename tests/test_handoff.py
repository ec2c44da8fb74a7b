"""Hand-off to averaging programs: picker3d's coordinate sets through the converters
the downstream plugins really use — reliontomo's RELION 5 particle star writer, Dynamo's
table writer and Dynamo extraction's coordinate export — read back and compared with the
engine's coordinates; binned picking with unbinned extraction goes through the sets'
sampling rates."""
import os
import shutil
import tempfile

import numpy as np
import pytest
import tomo.tests.test_base_centralized_layer as tomo_checks

pytestmark = pytest.mark.scipion

SHAPE = (40, 64, 64)
SAMPLING = 10.0

reliontomo = pytest.importorskip("reliontomo", reason="scipion-em-reliontomo is not installed (.ci/run installs it)")
dynamo = pytest.importorskip("dynamo", reason="scipion-em-dynamo is not installed (.ci/run installs it)")


class TestPicker3DHandOff(tomo_checks.TestBaseCentralizedLayer):

    @classmethod
    def setUpClass(cls):
        from pyworkflow.tests import setupTestProject
        from tomo.protocols import ProtImportTomograms

        from picker3d.engine.formats.mrc import read_volume, write_volume
        from picker3d.engine.formats.readers import read_table
        from picker3d.engine.formats.writers import write_table
        from picker3d.engine.simulation.dataset import write_simulation
        from picker3d.engine.volume import bin_volume, to_binned
        from picker3d.protocols import ProtPicker3DImportAnnotations
        cls.cwd = os.getcwd()
        cls.data = tempfile.mkdtemp(prefix="picker3d_handoff_")
        write_simulation(cls.data, n_tomograms=2, seed=95, shape=SHAPE, snr=2.0, species=["barrel", "shell"],
                         counts={"barrel": 3, "shell": 3}, crowders=0, vesicles=0, membranes=0, gold=0)
        # a bin-2 copy of the tomograms with the coordinates in its voxels (binned picking)
        binned = os.path.join(cls.data, "bin2")
        os.makedirs(os.path.join(binned, "ann"))
        os.makedirs(os.path.join(cls.data, "ann"))
        for i in range(2):
            vol, _ = read_volume(os.path.join(cls.data, f"tomo_0{i}.mrc"))
            write_volume(os.path.join(binned, f"tomo_0{i}.mrc"), bin_volume(vol, 2), 2 * SAMPLING)
            t = read_table(os.path.join(cls.data, f"tomo_0{i}.tsv"))
            shutil.copy(os.path.join(cls.data, f"tomo_0{i}.tsv"), os.path.join(cls.data, "ann"))
            t.xyz = to_binned(t.xyz, 2)
            write_table(os.path.join(binned, "ann", f"tomo_0{i}.tsv"), t)
        setupTestProject(cls)
        sets = {}
        for name, folder, sr in (("full", cls.data, SAMPLING), ("bin2", binned, 2 * SAMPLING)):
            imp = cls.newProtocol(ProtImportTomograms, filesPath=folder, filesPattern="tomo_0?.mrc", samplingRate=sr)
            cls.launchProtocol(imp)
            ann = cls.newProtocol(ProtPicker3DImportAnnotations, inputTomograms=imp.Tomograms,
                                  filesPath=os.path.join(folder, "ann"), filesPattern="*.tsv", boxSize=18)
            cls.launchProtocol(ann)
            sets[name] = (imp.Tomograms, ann.coordinates, os.path.join(folder, "ann"))
        cls.sets = sets

    @classmethod
    def tearDownClass(cls):
        os.chdir(cls.cwd)
        shutil.rmtree(cls.data, ignore_errors=True)

    def _engine(self, which, ts_id):
        from picker3d.engine.formats.readers import read_table
        return read_table(os.path.join(self.sets[which][2], ts_id + ".tsv"))

    def _tomoDict(self, tomos):
        return {t.getTsId(): t.clone() for t in tomos}

    def test_relion5_particles_star(self):
        import starfile
        from reliontomo.convert.convert50_tomo import Writer
        tomos, coords, _ = self.sets["full"]
        out = tempfile.mkdtemp(dir=self.data)
        Writer.coords2Star(coords, self._tomoDict(tomos), out)
        star = starfile.read(os.path.join(out, os.listdir(out)[0]))
        df = star["particles"] if isinstance(star, dict) else star
        self.assertEqual(sorted(set(df["rlnTomoName"])), ["tomo_00", "tomo_01"])     # tomogram names = tsIds
        for ts_id in ("tomo_00", "tomo_01"):
            sub = df[df["rlnTomoName"] == ts_id]
            got = sub[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(float)
            eng = self._engine("full", ts_id)
            np.testing.assert_allclose(_sorted(got), _sorted(eng.xyz), atol=0.01)
            # the class travels in the Scipion group column
            names = ["barrel", "shell"]
            got_cls = sorted(zip(np.round(got, 2).tolist(), sub["sciGroupId"] if "sciGroupId" in sub else sub["_sciGroupId"]))
            exp_cls = sorted(zip(np.round(eng.xyz, 2).tolist(), [names.index(c) + 1 for c in eng.classes]))
            self.assertEqual([g for _, g in got_cls], [g for _, g in exp_cls])

    def test_relion5_star_from_binned_picks_scaled_to_unbinned(self):
        import starfile
        from reliontomo.convert.convert50_tomo import Writer
        tomos, coords, _ = self.sets["bin2"]
        out = tempfile.mkdtemp(dir=self.data)
        Writer.coords2Star(coords, self._tomoDict(tomos), out, coordsScale=coords.getSamplingRate() / SAMPLING)
        star = starfile.read(os.path.join(out, os.listdir(out)[0]))
        df = star["particles"] if isinstance(star, dict) else star
        for ts_id in ("tomo_00", "tomo_01"):
            got = df[df["rlnTomoName"] == ts_id][["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(float)
            np.testing.assert_allclose(_sorted(got), _sorted(2.0 * self._engine("bin2", ts_id).xyz), atol=0.01)

    def test_dynamo_table_columns(self):
        from dynamo.convert.convert import writeDynTable
        from tomo.objects import SetOfSubTomograms, SubTomogram
        tomos, coords, _ = self.sets["full"]
        subtomos = SetOfSubTomograms.create(self.proj.getTmpPath(), template="dynsub%s.sqlite")
        subtomos.setSamplingRate(SAMPLING)
        subtomos.setCoordinates3D(coords)
        for coord in coords.iterCoordinates():
            st = SubTomogram()
            st.setCoordinate3D(coord.clone())
            st.setVolName(coord.getVolName())
            st.setSamplingRate(SAMPLING)
            st.setTransform(coord.getTransform() if hasattr(coord, "getTransform") else None)
            subtomos.append(st)
        tbl = os.path.join(self.data, "picks.tbl")
        with open(tbl, "w") as fh:
            writeDynTable(fh, subtomos)
        rows = np.loadtxt(tbl, ndmin=2)
        got = rows[:, 23:26]                         # columns 24-26 (1-based): x y z
        eng = np.concatenate([self._engine("full", t).xyz for t in ("tomo_00", "tomo_01")])
        self.assertEqual(len(rows), len(eng))
        np.testing.assert_allclose(_sorted(got), _sorted(eng), atol=0.01)
        np.testing.assert_allclose(rows[:, 3:9], 0.0, atol=1e-6)      # identity: no shifts, no angles

    def test_dynamo_extraction_coordinates_binned_picking(self):
        """Dynamo's extraction on unbinned tomograms with picks made at bin 2: the protocol scales by
        the sampling rates; its coordinate export (no Dynamo binary needed) is read back."""
        from dynamo.protocols.protocol_extraction import DynamoExtraction
        tomos, coords, _ = self.sets["bin2"]
        full_tomos = self.sets["full"][0]
        prot = self.newProtocol(DynamoExtraction, inputCoords=coords, tomoSource=1, inputTomos=full_tomos,
                                boxSize=36)
        prot._initialize()
        for ts_id in ("tomo_00", "tomo_01"):
            prot.writeSetOfCoordinates3D(ts_id)
            got = np.loadtxt(prot._getCoordsFileName(ts_id), ndmin=2)[:, :3]
            np.testing.assert_allclose(_sorted(got), _sorted(2.0 * self._engine("bin2", ts_id).xyz), atol=0.01)
        self.assertEqual(prot.failedItems, [])


def _sorted(a):
    a = np.asarray(a, float)
    return a[np.lexsort(np.round(a, 2).T[::-1])]
