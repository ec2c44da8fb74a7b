"""The cluster path on a real scheduler: a one-node SLURM cluster started by this
test (tests/slurm/slurm.sh: Debian's slurm-wlm and munge, installed when missing), Scipion's
host configuration config/hosts-slurm.conf, and the pick protocol with *Use queue* and *Use
queue for steps* on three tomograms: every tomogram's step is its own sbatch job (SLURM's job
completion log says so), the picks equal a local run's and the protocol ends finished.

Also here, since it needs no GPU either: with a two-GPU list and two step threads, the engine
command lines carry the GPU ids Scipion assigned (``--gpu 0`` and ``--gpu 1``), and CPU runs
ask for no GPU. And one unreadable tomogram among three: the other two are registered, the
failed tsId is named, nothing of it is left.

If SLURM cannot be installed or started the test fails with the reason; it is not skipped.
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import simulated_project
import tomo.tests.test_base_centralized_layer as tomo_checks

pytestmark = pytest.mark.scipion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM_SCRIPT = os.path.join(ROOT, "tests", "slurm", "slurm.sh")
HOSTS_TEMPLATE = os.path.join(ROOT, "config", "hosts-slurm.conf")
SHAPE = (48, 64, 64)


def _job_records(jobcomp):
    """SLURM's job completion log: one dict per ended job (JobId, Name, JobState, ...)."""
    if not os.path.exists(jobcomp):
        return []
    with open(jobcomp) as fh:
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in fh if line.strip()]


class TestPicker3DSlurmQueue(tomo_checks.TestBaseCentralizedLayer):

    @classmethod
    def setUpClass(cls):
        cls.slurm_dir = tempfile.mkdtemp(prefix="picker3d_slurm_")
        r = subprocess.run(["bash", SLURM_SCRIPT, "start", cls.slurm_dir], capture_output=True, text=True,
                           timeout=900)
        if r.returncode != 0:
            subprocess.run(["bash", SLURM_SCRIPT, "stop", cls.slurm_dir], capture_output=True)
            raise RuntimeError(f"SLURM could not be started for the queue test: {r.stderr.strip() or r.stdout.strip()}")
        cls.slurm_conf = os.path.join(cls.slurm_dir, "slurm.conf")
        os.environ["SLURM_CONF"] = cls.slurm_conf      # sbatch/squeue of Scipion's launcher find the cluster
        try:
            simulated_project.start(cls, "picker3d_slurm_data_", n_tomograms=3, seed=91, shape=SHAPE, snr=2.0,
                                    species=["barrel"], counts={"barrel": 6})
            simulated_project.train_tiny_model(cls, epochs=3)
            from picker3d.protocols import ProtPicker3DImportModel
            imp = cls.newProtocol(ProtPicker3DImportModel, modelFile=cls.model_file)
            cls.launchProtocol(imp)
            cls.model = imp.model
        except BaseException:
            cls._stopSlurm()
            raise

    @classmethod
    def _stopSlurm(cls):
        subprocess.run(["bash", SLURM_SCRIPT, "stop", cls.slurm_dir], capture_output=True)
        os.environ.pop("SLURM_CONF", None)
        shutil.rmtree(cls.slurm_dir, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls._stopSlurm()
        simulated_project.end(cls)

    def _tables(self, pick):
        return {f"tomo_0{i}": pick.getTable(f"tomo_0{i}") for i in range(3)}

    def test_slurm_each_tomogram_is_its_own_job_and_picks_equal_a_local_run(self):
        import numpy as np

        from picker3d.protocols import ProtPicker3DPick
        local = self.newProtocol(ProtPicker3DPick, inputModel=self.model, inputTomograms=self.tomos, useGpu=False,
                                 numberOfThreads=1, binThreads=1, objLabel="local pick")
        self.launchProtocol(local)
        # the project's own host configuration: what a lab puts in SCIPION_HOME/config/hosts.conf
        shutil.copy(HOSTS_TEMPLATE, self.proj.getLocalConfigHosts())
        self.proj._loadHosts(None)
        queued = self.newProtocol(ProtPicker3DPick, inputModel=self.model, inputTomograms=self.tomos,
                                  useGpu=False, numberOfThreads=2, binThreads=1, objLabel="queued pick")
        # (JOB_THREADS, the cpus of each job, is the run's thread count: 2 fits this 2-core node)
        queued._useQueue.set(True)
        queued.setQueueParams(["picker3d", {"JOB_MEMORY": "2000", "JOB_TIME": "1", "QUEUE_FOR_JOBS": "Y"}])
        before = {r.get("JobId") for r in _job_records(os.path.join(self.slurm_dir, "jobcomp.log"))}
        self.launchProtocol(queued)
        queued = self.proj.getProtocol(queued.getObjId())
        self.assertTrue(queued.isFinished(), queued.getErrorMessage())
        # the scheduler's accounting: three jobs of this run (one per tomogram), all completed
        jobs = [r for r in _job_records(os.path.join(self.slurm_dir, "jobcomp.log"))
                if r.get("JobId") not in before and r.get("Name", "").startswith(queued.strId() + "-")]
        self.assertEqual(len(jobs), 3, jobs)
        self.assertEqual({j["JobState"] for j in jobs}, {"COMPLETED"}, jobs)
        # and each job's script picked one tomogram, a different one each time
        scripts = glob.glob(os.path.join(self.proj.getPath(), queued._getLogsPath("picker3d*.job")))
        self.assertEqual(len(scripts), 3, scripts)
        picked = []
        for path in scripts:
            with open(path) as fh:
                text = fh.read()
            self.assertIn("#SBATCH --partition=picker3d", text)
            picked += re.findall(r"(tomo_0\d)\.mrc", text.split("--tomograms", 1)[1].split("--out-dir")[0])
        self.assertEqual(sorted(picked), ["tomo_00", "tomo_01", "tomo_02"])
        # the same picks as the local run, registered in one set
        ref, got = self._tables(local), self._tables(queued)
        for ts in ref:
            self.assertEqual(len(ref[ts]), len(got[ts]), ts)
            np.testing.assert_allclose(got[ts].xyz, ref[ts].xyz, atol=0.01)
        self.assertEqual(queued.coordinates.getSize(), sum(len(t) for t in ref.values()))
        self.assertEqual(queued.coordinates.getSize(), local.coordinates.getSize())

    def test_two_gpu_list_each_step_carries_its_assigned_gpu(self):
        """GPU steps get their ids from Scipion's %(GPU)s: with GPUs '0 1' and two step threads,
        the three engine commands carry --gpu 0 or --gpu 1, both ids are used, and no
        CUDA_VISIBLE_DEVICES is forced (no GPU is needed: --device auto falls back to the CPU)."""
        from picker3d.protocols import ProtPicker3DPick
        pick = self.newProtocol(ProtPicker3DPick, inputModel=self.model, inputTomograms=self.tomos, useGpu=True,
                                gpuList="0 1", numberOfThreads=3, binThreads=1, objLabel="two-GPU pick")
        self.launchProtocol(pick)
        with open(os.path.join(self.proj.getPath(), pick.getLogPaths()[0])) as fh:
            log = fh.read()
        commands = [ln for ln in log.splitlines() if " -m picker3d pick " in ln]
        self.assertEqual(len(commands), 3, log[-3000:])
        ids = [re.search(r"--gpu (\S+)", c).group(1) for c in commands]
        self.assertEqual(set(ids), {"0", "1"}, commands)
        self.assertTrue(all("%(GPU)s" not in c and "CUDA_VISIBLE_DEVICES" not in c for c in commands), commands)
        # the CPU-only steps of the same run (link, output) asked for no GPU
        steps = {s.funcName.get(): s for s in pick.loadSteps()}
        self.assertFalse(steps["createOutputStep"].needsGPU())
        self.assertFalse(steps["linkTomogramsStep"].needsGPU())
        self.assertTrue(steps["pickStep"].needsGPU())
        # a CPU run asks for none at all, and its command carries no GPU
        cpu = self.newProtocol(ProtPicker3DPick, inputModel=self.model, inputTomograms=self.tomos, useGpu=False)
        self.assertEqual(cpu._deviceArg(), "--device cpu")
        cpu._insertAllSteps()
        self.assertEqual(len(cpu._steps), 5)
        self.assertFalse(any(s.needsGPU() for s in cpu._steps))


class TestPicker3DOneTomogramFails(tomo_checks.TestBaseCentralizedLayer):
    """One unreadable tomogram among three does not sink the pick run."""

    @classmethod
    def setUpClass(cls):
        simulated_project.start(cls, "picker3d_failing_", n_tomograms=3, seed=92, shape=SHAPE, snr=2.0,
                                species=["barrel"], counts={"barrel": 6})
        simulated_project.train_tiny_model(cls, epochs=2)

    @classmethod
    def tearDownClass(cls):
        simulated_project.end(cls)

    def test_one_unreadable_tomogram_the_others_are_registered(self):
        from picker3d.protocols import ProtPicker3DImportModel, ProtPicker3DPick
        imp = self.newProtocol(ProtPicker3DImportModel, modelFile=self.model_file)
        self.launchProtocol(imp)
        # tomo_01 breaks after import (a file truncated on a full disk, say)
        path = os.path.join(self.data, "tomo_01.mrc")
        with open(path, "rb") as fh:
            head = fh.read(2000)
        with open(path, "wb") as fh:
            fh.write(head)
        pick = self.newProtocol(ProtPicker3DPick, inputModel=imp.model, inputTomograms=self.tomos, useGpu=False,
                                numberOfThreads=2, binThreads=1, saveScoreMaps=True)
        self.launchProtocol(pick)
        pick = self.proj.getProtocol(pick.getObjId())
        self.assertTrue(pick.isFinished(), pick.getErrorMessage())
        self.assertEqual(list(pick.failedTsIds()), ["tomo_01"])
        self.assertIn("tomo_01.mrc: not a readable MRC file", pick.failedTsIds()["tomo_01"])
        per_tomo = {}
        for c in pick.coordinates.iterCoordinates():
            per_tomo[c.getTomoId()] = per_tomo.get(c.getTomoId(), 0) + 1
        self.assertEqual(sorted(per_tomo), ["tomo_00", "tomo_02"])
        self.assertEqual(pick.coordinates.getSize(), len(pick.getTable("tomo_00")) + len(pick.getTable("tomo_02")))
        self.assertEqual(pick.scoreMaps.getSize(), 2)
        summary = " ".join(pick.summary())
        self.assertIn("tomo_01", summary)
        logs = ""
        for log in pick.getLogPaths():
            if os.path.exists(os.path.join(self.proj.getPath(), log)):
                with open(os.path.join(self.proj.getPath(), log)) as fh:
                    logs += fh.read()
        self.assertRegex(logs, r"tomogram tomo_01 failed")
        self.assertIn("not picked (failed): tomo_01", logs)
        # nothing half-written for it: no table, no score map; its error line is kept
        files = os.listdir(os.path.join(self.proj.getPath(), pick._getExtraPath("tomo_01")))
        self.assertIn("FAILED", files)
        self.assertFalse([f for f in files if f.endswith(".tsv") or f.endswith("_score.mrc")], files)
