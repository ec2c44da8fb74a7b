"""Shared plumbing of the picker3d protocols: engine jobs, device and threads, diameters."""
import os

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.protocol.constants import GPU_LIST, USE_GPU
from tomo.protocols import ProtTomoBase

from ..engine.errors import InputError
from ..engine.formats.table import parse_diameters

# the engine's --precision values, in the form's order
PRECISIONS = ["auto", "fp32", "bf16"]


class EngineError(RuntimeError):
    """An engine command ended with its one-line error (bad input, not a stopped run)."""


class ProtPicker3DBase(EMProtocol, ProtTomoBase):
    """Base of the picker3d protocols (not shown in the menu)."""
    _label = None

    # ---- form helpers --------------------------------------------------------------
    @staticmethod
    def _addComputeParams(form, gpu=True, threads=2, parallel_steps=False, precision=False):
        """GPU and thread parameters (and, with ``precision``, the network's arithmetic). With
        ``parallel_steps`` (one step per tomogram), Scipion's threads run that many steps at
        once and each engine job gets ``threads`` threads."""
        if precision:
            form.addParam("precision", params.EnumParam, choices=PRECISIONS, default=0,
                          expertLevel=params.LEVEL_ADVANCED, label="Network precision",
                          help="auto (default): bfloat16 on CPUs that compute it natively (AVX512-BF16, "
                               "AMX) and float16 for picking on a GPU; fp32: always single precision; bf16: "
                               "always bfloat16.")
        if gpu:
            form.addHidden(USE_GPU, params.BooleanParam, default=True,
                           label="Use GPU", help="Run the network on a CUDA GPU when one is available; "
                                                 "without one, the CPU is used.")
            form.addHidden(GPU_LIST, params.StringParam, default="0", label="GPU IDs",
                           help="GPUs Scipion hands to the network steps (space-separated ids, default 0). "
                                "With several threads, each step gets its own share of them; training "
                                "uses the first GPU of its share, picking all of them (one tomogram per GPU).")
        if parallel_steps:
            form.addParallelSection(threads=1, mpi=0, binThreads=threads)
        else:
            form.addParallelSection(threads=threads, mpi=0)

    # ---- engine jobs -----------------------------------------------------------------
    def _getEnviron(self):
        from .. import Plugin
        env = Plugin.getEnviron()
        threads = str(self._engineThreads())
        env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        # no CUDA_VISIBLE_DEVICES here: the GPU ids reach the engine through %(GPU)s (see
        # _deviceArg), which Scipion fills with the step's share of the GPU list (renumbered
        # from 0 when a queue assigns the devices)
        return env

    def _usesGpu(self):
        """Whether the network steps ask Scipion for a GPU (CPU-only runs must not wait for one:
        with a single GPU id, GPU steps would run one at a time)."""
        use_gpu = getattr(self, USE_GPU, None)
        return bool(use_gpu is not None and use_gpu.get())

    def _engineThreads(self):
        """Threads of one engine job: the binary threads when steps run in parallel."""
        if not hasattr(self, "numberOfThreads"):
            return 1
        if not self.modeSerial() and hasattr(self, "binThreads"):
            return max(1, int(self.binThreads.get() or 1))
        return max(1, int(self.numberOfThreads.get() or 1))

    def _deviceArg(self):
        """``--device`` (and the GPUs): with GPUs allowed, the plugin's device (auto: a GPU when
        CUDA is there, else the CPU) and ``--gpu %(GPU)s``, the ids Scipion assigns this step;
        without, the CPU, and no GPU slot is asked for."""
        from .. import Plugin
        if hasattr(self, USE_GPU) and not self._usesGpu():
            return "--device cpu"
        return f"--device {Plugin.getDevice()} --gpu %(GPU)s"

    def _precision(self):
        """The engine's ``precision`` (auto for protocols saved before the parameter)."""
        choice = getattr(self, "precision", None)
        return PRECISIONS[choice.get() or 0] if choice is not None else "auto"

    def runEngine(self, subcommand, args, tag=None):
        """Run an engine command; when it fails, the protocol's error is the engine's one-line
        message (which names the file, set or parameter), the details stay in the run log.

        A job sent to a queue returns when the scheduler says it has ended, whatever its exit
        status: the engine's error file is what tells a failed job from a finished one there.
        ``tag`` (a tsId) keeps the error files of steps running at once apart."""
        from .. import Plugin
        program, arguments = Plugin.getEngineCommand(subcommand, args)
        env = self._getEnviron()
        error_file = os.path.abspath(self._getExtraPath(f"{subcommand}_{tag}_error.txt" if tag else f"{subcommand}_error.txt"))
        env["PICKER3D_ERROR_FILE"] = error_file
        if os.path.exists(error_file):
            os.remove(error_file)
        try:
            self.runJob(program, arguments, env=env, numberOfMpi=1, numberOfThreads=1)
        except Exception:
            if not os.path.exists(error_file):
                raise
        if os.path.exists(error_file):
            with open(error_file) as fh:
                line = fh.read().strip().replace("picker3d: error: ", "", 1)
            os.remove(error_file)
            raise EngineError(f"picker3d {subcommand}: {line}") from None

    # ---- helpers ---------------------------------------------------------------------
    def _absPath(self, path):
        """``path`` (relative to the project, as run paths are) made absolute, so that scripts
        and viewers can read run files from any working directory."""
        if os.path.isabs(path):
            return path
        project = self.getProject() if hasattr(self, "getProject") else None
        return os.path.join(project.getPath(), path) if project is not None else os.path.abspath(path)

    @staticmethod
    def _quote(path):
        import shlex
        return shlex.quote(os.path.abspath(path))

    # the form's label of an engine option (by its flag), for the engine's checks' messages
    ENGINE_LABELS = {}

    def _engineProblems(self, command):
        """The engine's own checks of the form's values (``_engineOptions()``, picker3d's
        declared options): one message per problem, naming the form's parameter."""
        from ..engine.options import check
        out = []
        for msg in check(command, self._engineOptions()):
            flag, _, rest = msg.partition(": ")
            label = self.ENGINE_LABELS.get(flag)
            out.append(f"{label} ({flag}): {rest}." if label else msg)
        return out

    @staticmethod
    def _emptySetErrors(inputSet, what):
        """Validation messages for a missing or empty input set, naming it."""
        if inputSet is None:
            return [f"{what} are missing."]
        if inputSet.getSize() == 0:
            return [f"The {what.lower()} set {inputSet.getObjLabel() or inputSet.getObjName()} is empty."]
        return []

    @staticmethod
    def _coordinateClasses(coords):
        """Class names of a coordinate set: picker3d's stored order, else the group ids found."""
        from ..convert import get_class_names, tables_from_coordinates
        names = get_class_names(coords)
        if not names:
            names = sorted({c for t in tables_from_coordinates(coords).values() for c in t.class_names()})
        return names

    def _diameterDict(self, text, class_names, box_size, param="diameters"):
        """{class: diameter px}: from ``text`` (name=VOX,... or one number), else the box size."""
        try:
            given = parse_diameters(text) if text and text.strip() else {}
        except InputError as exc:
            raise ValueError(str(exc).replace("--diameters", f"'{param}'")) from None
        out = {}
        for c in class_names:
            if c in given:
                out[c] = given[c]
            elif "*" in given:
                out[c] = given["*"]
            elif box_size:
                out[c] = float(box_size)
            else:
                raise ValueError(f"'{param}': no diameter for class '{c}' and the coordinates have no box size")
        return out
