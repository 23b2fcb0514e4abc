"""Models the CLI can open: what a path holds, and a runner for each kind.

    kind = detect_kind(path)      # "plan" | "network" | "graphdef" | "savedmodel"
    model = open_model(path, args)
    model.inputs                  # {name: (numpy dtype, shape with -1 for unknown)}
    outputs = model.run(feeds)    # {name: numpy array}

Plans and networks run on the engine alone (no TensorFlow import); .pb files
and SavedModel directories are opened by tf_integration/cli_models.py.
"""
import os

import numpy as np

import engine as rt
from engine import plan as planfile
from engine.errors import PlanFormatError

from .cli import CliError

KINDS = ("plan", "network", "graphdef", "savedmodel")


def detect_kind(path, option="MODEL"):
    """What ``path`` holds, from its first bytes (or a directory's saved_model.pb)."""
    if not os.path.exists(path):
        raise CliError(f"{option} {path!r}", "no such file or directory",
                       "a frozen or converted .pb, a SavedModel directory, a plan or a network")
    if os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb",
                                                               "saved_model.pbtxt")):
            return "savedmodel"
        raise CliError(f"{option} {path!r}", "a directory without saved_model.pb",
                       "a SavedModel directory (or a .pb / plan / network file)")
    with open(path, "rb") as f:
        head = f.read(len(planfile.MAGIC))
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x93NUMPY"):
        raise CliError(f"{option} {path!r}", "a NumPy file (.npz/.npy: data, not a model)",
                       "a frozen or converted .pb, a SavedModel directory, a plan or a network")
    if head != planfile.MAGIC:
        return "graphdef"
    doc, _ = _load_plan_doc(path, option)
    return "plan" if "engine" in doc else "network"


def _load_plan_doc(path, option):
    with open(path, "rb") as f:
        data = f.read()
    try:
        return planfile.loads(data)
    except PlanFormatError as exc:
        raise CliError(f"{option} {path!r}", f"a damaged cupyrt file ({exc})",
                       "a plan or network written by cupyrt (rebuild or re-export it)") from exc


def read_npz(path, option="--inputs"):
    """{key: array} of an .npz, with a one-line error for anything else."""
    if not os.path.isfile(path):
        raise CliError(f"{option} {path!r}", "no such file", "an .npz file (numpy.savez)")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CliError(f"{option} {path!r}", f"not a readable .npz ({exc})",
                       "an .npz file written by numpy.savez") from exc
    if not hasattr(data, "files"):
        raise CliError(f"{option} {path!r}", "a single .npy array",
                       "an .npz file (numpy.savez) with one array per input")
    with data:
        arrays = {k: data[k] for k in data.files}
    if not arrays:
        raise CliError(f"{option} {path!r}", "an .npz holding no array",
                       "one array per model input")
    return arrays


def match_feeds(arrays, inputs, path, option="--inputs"):
    """{input name: array}: .npz keys name the inputs (``x`` or ``x:0``); one array
    for a one-input model needs no name (numpy.savez's ``arr_0``)."""
    by_key = {}
    for key, value in arrays.items():
        name = key if key in inputs else key.split(":")[0] if key.split(":")[0] in inputs else None
        if name is not None:
            by_key[name] = value
    if len(by_key) != len(arrays) or set(by_key) != set(inputs):
        if len(arrays) == 1 and len(inputs) == 1:
            by_key = {next(iter(inputs)): next(iter(arrays.values()))}
        else:
            raise CliError(f"{option} {path!r}", f"arrays {sorted(arrays)}",
                           f"one array per model input, named {sorted(inputs)}")
    for name, (dtype, shape) in inputs.items():
        a = by_key[name]
        if dtype is not None and a.dtype != dtype:
            if a.dtype.kind == dtype.kind or (a.dtype.kind in "iu" and dtype.kind == "f"):
                a = a.astype(dtype)       # float64 from numpy defaults: what the user meant
            else:
                raise CliError(f"{option} {path!r}", f"array {name!r} of dtype {a.dtype}",
                               f"dtype {dtype} for model input {name!r}")
        if shape is not None and (len(shape) != a.ndim or any(
                w >= 0 and d != w for d, w in zip(a.shape, shape))):
            raise CliError(f"{option} {path!r}", f"array {name!r} of shape {list(a.shape)}",
                           f"shape {list(shape)} for model input {name!r} (-1: any)")
        by_key[name] = a
    return by_key


class EngineModel:
    """A plan, or a network built here (``precision``), run on the engine's backend."""
    kind = "plan"

    def __init__(self, path, kind, precision="FP32", backend=None):
        with open(path, "rb") as f:
            data = f.read()
        self.path, self.kind = path, kind
        if kind == "network":
            if precision == "INT8":
                raise CliError(f"--precision for {path!r}", "int8",
                               "fp32 or fp16 (an INT8 engine needs calibration: cupyrt "
                               "debug-precision, or build it with a calibrator)")
            net = rt.deserialize_network(data)
            builder = rt.Builder()
            config = builder.create_builder_config()
            if precision == "FP16":
                config.set_flag(rt.BuilderFlag.FP16)
            config.backend = backend
            data = builder.build_serialized_network(net, config)
        self.engine = rt.Runtime(backend=backend).deserialize_cuda_engine(data)
        self.context = self.engine.create_execution_context()
        e = self.engine
        self.inputs = {n: (e.get_tensor_dtype(n).to_numpy(), list(e.get_tensor_shape(n)))
                       for n in e.input_names}
        self.output_names = list(e.output_names)
        self.backend = e.backend.name

    def run(self, feeds):
        # match_feeds checked names, dtypes and shapes; an ExecutionError left is ours
        # (a CupyrtError), said in one line by main()
        return self.context.execute(feeds)

    def profiled_contexts(self):
        """[(engine name, execution context)] whose profiler the bench sets."""
        return [(os.path.basename(self.path), self.context)]

    def describe(self):
        return f"{self.kind} {self.path} on the {self.backend} backend"


def open_model(path, args, option="MODEL"):
    """The runnable model at ``path`` (any kind), per the run/bench options."""
    kind = detect_kind(path, option)
    backend = None if args.backend in ("auto", "tensorflow") else args.backend
    if kind in ("plan", "network"):
        if args.backend == "tensorflow":
            raise CliError("--backend", "tensorflow for a " + kind,
                           "auto, cupy or numpy (a plan or network has no TensorFlow graph)")
        return EngineModel(path, kind, args.precision, backend)
    # TensorFlow only for a .pb or a SavedModel: plan files run on hosts without it
    from .cli import import_tensorflow
    import_tensorflow()
    from tf_integration import cli_models  # (TensorFlow: as above)
    return cli_models.open_tf_model(path, kind, args)
