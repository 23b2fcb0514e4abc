"""A converted model served over HTTP with Ray Serve, requests batched dynamically.

    pip install -e ".[tf-cpu,serve]"     # or [tf,cuda13,serve] on a GPU host
    python -m workflows.serving model_fp16.pb --port 8000 [--max-batch-size 32]
    curl -s localhost:8000/ -d '{"inputs": {"x": [[0.1, 0.2, 0.3, 0.4]]}}'
    curl -s localhost:8000/stats

MODEL is anything ``cupyrt run`` opens (workflows/cli_models.py): a frozen or
converted .pb, a SavedModel directory (original or converted), a plan.

Replicas: on a Ray cluster with GPUs, one replica per GPU (``num_gpus=1``: Ray
gives each its own CUDA_VISIBLE_DEVICES), each holding its own engines and the
CUDA graphs they capture per input shape, engines on CuPy. Without GPUs,
``--replicas`` CPU replicas (default 1) whose engine nodes run their TensorFlow
segments (``--cpu-backend tensorflow``, the default: on a CPU that is never
slower than the original graph) or the engines themselves on the NumPy
reference backend (``--cpu-backend numpy``: exact engine semantics, slower).

Batching: ``@serve.batch`` gathers requests for up to ``--batch-wait-timeout-s``
or until ``--max-batch-size`` rows (rows, not requests: a request may carry
several), stacks them on the leading axis, runs the model once and splits the
answers back. The stacked batch is padded (with copies of its last row) to
the next power of two, capped at the maximum: an engine is built, and on a GPU
a CUDA graph captured, per input shape, so padding bounds them to about
log2(max) shapes instead of one per batch size seen (TensorRT users do the same
with optimisation profiles). ``GET /stats`` reports the batches a replica ran.

HTTP: ``POST /`` with ``{"inputs": {name: nested list}}`` (a one-input model also
takes ``{"inputs": nested list}``), every input with the same leading number of
rows; the answer is ``{"outputs": {name: nested list}, "rows": n}``. A bad request
gets status 400 and ``{"error": "..."}`` naming what was found and expected.
"""
import argparse
import asyncio
import collections
import concurrent.futures
import logging
import os
import sys
import threading

import numpy as np

from engine.errors import CupyrtError
from workflows.cli import CliError
from workflows.cli_models import detect_kind, open_model

logger = logging.getLogger(__name__)

CPU_BACKENDS = ("tensorflow", "numpy")


class ServingError(CupyrtError, ValueError):
    """A model that cannot be served as asked (found, expected)."""


class RequestError(ServingError):
    """A request the model cannot answer: HTTP 400."""


def bucket(rows, max_rows):
    """The padded batch for ``rows`` rows: the next power of two, capped at ``max_rows``."""
    if rows > max_rows:
        raise ServingError(f"a batch of {rows} rows; expected at most max_batch_size={max_rows}")
    size = 1
    while size < rows:
        size *= 2
    return min(size, max_rows)


def bucket_sizes(max_rows):
    """Every padded batch size a replica can run (1, 2, 4, ..., max_rows)."""
    sizes, size = [], 1
    while size < max_rows:
        sizes.append(size)
        size *= 2
    return sizes + [max_rows]


def _input_key(key, inputs):
    """The model's name for a request key: ``x`` and ``x:0`` both name a graph's ``x:0``."""
    if key in inputs:
        return key
    for name in inputs:
        if name.split(":")[0] == key:
            return name
    return None


def parse_request(body, inputs, max_rows):
    """{model input name: array} of a request's JSON ``body``, checked against
    ``inputs`` ({name: (numpy dtype, shape with -1 for any)}). All arrays share their
    leading (row) axis; at most ``max_rows`` rows."""
    if not isinstance(body, dict) or "inputs" not in body:
        raise RequestError(f"a JSON body {type(body).__name__} without 'inputs'; expected "
                           '{"inputs": {name: nested list}}')
    given = body["inputs"]
    if not isinstance(given, dict):
        if len(inputs) != 1:
            raise RequestError(f"one unnamed array; expected a dict naming every input "
                               f"{sorted(inputs)}")
        given = {next(iter(inputs)): given}
    feeds = {}
    for key, value in given.items():
        name = _input_key(key, inputs)
        if name is None or name in feeds:
            raise RequestError(f"input {key!r}; expected each of {sorted(inputs)} once")
        dtype, shape = inputs[name]
        try:
            array = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"input {key!r} not an array of {dtype} ({exc}); expected "
                               "a nested list of numbers") from exc
        if array.ndim == 0 or (shape is not None and (
                array.ndim != len(shape) or any(w >= 0 and d != w for d, w in
                                                zip(array.shape[1:], shape[1:])))):
            raise RequestError(f"input {key!r} of shape {list(array.shape)}; expected "
                               f"{shape} (-1: any; the first axis counts rows)")
        feeds[name] = array
    missing = sorted(set(inputs) - set(feeds))
    if missing:
        raise RequestError(f"inputs {sorted(feeds)}; expected also {missing}")
    rows = {len(a) for a in feeds.values()}
    if len(rows) != 1:
        raise RequestError(f"inputs with {sorted(rows)} rows; expected one row count for all")
    n = rows.pop()
    if not 1 <= n <= max_rows:
        raise RequestError(f"{n} rows; expected 1 to max_batch_size={max_rows}")
    return feeds


def stack(requests, max_rows, pad=True):
    """One feed for a list of parsed requests, and the rows of each: arrays joined on
    the leading axis, padded with copies of the last row to ``bucket()``'s size."""
    counts = [len(next(iter(r.values()))) for r in requests]
    total = sum(counts)
    padded = bucket(total, max_rows) if pad else total
    feeds = {}
    for name in requests[0]:
        parts = [r[name] for r in requests]
        if padded > total:
            parts.append(np.repeat(parts[-1][-1:], padded - total, axis=0))
        feeds[name] = np.concatenate(parts, axis=0)
    return feeds, counts


def split(outputs, counts):
    """Per request, {output name: its rows} of a stacked run (padding dropped)."""
    answers, start = [], 0
    for n in counts:
        answers.append({k: v[start:start + n] for k, v in outputs.items()})
        start += n
    return answers


class ModelReplica:
    """What one replica holds: the opened model, a thread that runs it, batch records.

    Plain Python (no Ray): ``deployment()`` wraps it with ``@serve.deployment`` and
    ``@serve.batch``. ``backend`` is where engine nodes run: ``cupy`` on a GPU replica,
    ``tensorflow`` (their TF segments) or ``numpy`` on a CPU replica.
    """

    def __init__(self, model_path, backend="tensorflow", max_batch_size=32, signature=None,
                 outputs=None, pad=True, warmup=False):
        self.max_batch_size = int(max_batch_size)
        if self.max_batch_size < 1:
            raise ServingError(f"max_batch_size={max_batch_size}; expected at least 1")
        self.backend, self.pad = backend, pad
        args = argparse.Namespace(backend=backend, precision="FP32", signature=signature,
                                  outputs=list(outputs) if outputs else None)
        # One thread opens and runs the model, always the same: execution contexts, CuPy's
        # current device and stream, the CUDA graphs captured on it and a TF session are
        # per thread or bound at creation; and the event loop stays free to queue the next
        # batch while this one runs.
        self._runner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cupyrt")
        try:
            self.model = self._runner.submit(open_model, model_path, args).result()
        except CliError as exc:
            raise ServingError(f"cannot serve {model_path}: {exc}") from exc
        for name, (_, shape) in self.model.inputs.items():
            if shape is not None and (not shape or shape[0] >= 0):
                raise ServingError(f"input {name!r} of shape {shape}; expected a dynamic "
                                   "leading (batch) axis, -1, to stack requests on")
        self.warnings = engine_warnings(self.model, self.max_batch_size, pad)
        for w in self.warnings:
            logger.warning("%s", w)
        self._lock = threading.Lock()
        # (requests, rows, padded rows) of the last batches: a server runs for days
        self.batches = collections.deque(maxlen=1024)
        self.totals = {"batches": 0, "requests": 0, "rows": 0}
        logger.info("serving %s, engines on %s, batches up to %d rows",
                    self.model.describe(), backend, self.max_batch_size)
        if warmup:
            self.warmup()

    def warmup(self):
        """Run every padded batch size once, so that no request waits for an engine
        build or a CUDA graph capture. Returns the sizes run (none when an input's
        shape beyond the batch axis is not known)."""
        shapes = [s for _, s in self.model.inputs.values()]
        if any(s is None or any(d < 0 for d in s[1:]) for s in shapes):
            logger.info("no warm-up: input shapes beyond the batch axis are not all known")
            return []
        rng = np.random.default_rng(0)
        sizes = bucket_sizes(self.max_batch_size) if self.pad else []
        for n in sizes:
            feeds = {k: rng.standard_normal((n, *s[1:])).astype(d)
                     for k, (d, s) in self.model.inputs.items()}
            self._runner.submit(self.model.run, feeds).result()
        return sizes

    def parse(self, body):
        return parse_request(body, self.model.inputs, self.max_batch_size)

    def _submit(self, requests):
        feeds, counts = stack(requests, self.max_batch_size, self.pad)
        return self._runner.submit(self._run, feeds, counts, len(requests))

    def _run(self, feeds, counts, n_requests):
        outputs = self.model.run(feeds)
        with self._lock:
            self.batches.append((n_requests, sum(counts), _rows(feeds)))
            for key, n in (("batches", 1), ("requests", n_requests), ("rows", sum(counts))):
                self.totals[key] += n
        return split(outputs, counts)

    def run_batch(self, requests):
        """Answers to parsed requests, in one model run (blocking)."""
        return self._submit(requests).result()

    async def run_batch_async(self, requests):
        """run_batch for the event loop: it waits without blocking the loop."""
        return await asyncio.wrap_future(self._submit(requests))

    def stats(self):
        """The replica, its model and the last batches it ran (requests, rows, padded)."""
        with self._lock:
            batches, totals = list(self.batches), dict(self.totals)
        return {"pid": os.getpid(), "backend": self.backend, "model": self.model.describe(),
                "max_batch_size": self.max_batch_size, "totals": totals,
                "batch_requests": [b[0] for b in batches], "batch_rows": [b[1] for b in batches],
                "padded_rows": [b[2] for b in batches]}


def _engine_runners(model):
    """The EngineRunners (tf_integration/engine_node.py) of an opened model: a .pb's
    engine nodes, a SavedModel's engines; none for a plan (it is one engine)."""
    runners = dict(getattr(model, "runners", None) or {})
    engines = getattr(model, "engines", None)
    if isinstance(engines, list):                        # a SavedModel's SavedEngines
        runners.update({e.name: e.runner for e in engines})
    return runners


def engine_warnings(model, max_rows, pad=True):
    """What would make engine nodes of ``model`` fall back to TensorFlow, or rebuild,
    at the batch sizes served: a static engine built for fewer rows than a batch may
    hold, an engine cache smaller than the padded batch sizes."""
    found = []
    sizes = len(bucket_sizes(max_rows)) if pad else max_rows
    for name, r in sorted(_engine_runners(model).items()):
        if r.has_plan and r.max_batch and r.max_batch < max_rows:
            found.append(f"engine node {name} is static with max_batch_size {r.max_batch}: "
                         f"batches of more rows run its TensorFlow segment; expected at least "
                         f"{max_rows} (convert with --max-batch-size {max_rows} or dynamic "
                         f"engines, or serve with --max-batch-size {r.max_batch})")
        elif not r.has_plan and r.capacity < sizes:
            found.append(f"engine node {name} caches {r.capacity} engine(s), fewer than the "
                         f"{sizes} batch sizes served: engines are evicted and rebuilt; expected "
                         f"maximum_cached_engines >= {sizes}")
    return found


def _rows(feeds):
    return len(next(iter(feeds.values())))


def deployment(max_batch_size=32, batch_wait_timeout_s=0.005):
    """The Ray Serve deployment class: a ModelReplica behind HTTP, ``@serve.batch``-ed.
    ``max_batch_size`` counts rows (``batch_size_fn``), not requests."""
    # optional dependency: Ray Serve (the [serve] extra), imported by what serves
    from ray import serve
    from starlette.responses import JSONResponse

    class ServedModel(ModelReplica):
        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s,
                     batch_size_fn=lambda items: sum(_rows(f) for f in items))
        async def _batched(self, requests):
            return await self.run_batch_async(requests)

        async def __call__(self, request):
            if request.method == "GET" and request.url.path.rstrip("/").endswith("stats"):
                return self.stats()
            try:
                body = await request.json()
            except ValueError as exc:
                return JSONResponse({"error": f"a body that is not JSON ({exc}); expected "
                                     '{"inputs": ...}'}, status_code=400)
            try:
                feeds = self.parse(body)
            except RequestError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            answer = await self._batched(feeds)
            return {"outputs": {k: v.tolist() for k, v in answer.items()},
                    "rows": _rows(feeds)}

    return serve.deployment(ServedModel)


def check_model(model_path):
    """What ``model_path`` holds (workflows.cli_models.detect_kind), or ServingError:
    said here in one line, not as a replica that fails to start on the cluster."""
    try:
        return detect_kind(model_path)
    except CliError as exc:
        raise ServingError(f"cannot serve {model_path}: {exc}") from exc


def build_app(model_path, max_batch_size=32, batch_wait_timeout_s=0.005, replicas=None,
              cpu_backend="tensorflow", signature=None, outputs=None, pad=True, warmup=None):
    """The bound Serve application for ``model_path`` on the running Ray cluster: one
    replica per GPU (num_gpus=1, engines on CuPy, warmed up), else ``replicas`` CPU
    replicas (default 1) with engine nodes on ``cpu_backend``."""
    import ray  # optional dependency (the [serve] extra)

    if cpu_backend not in CPU_BACKENDS:
        raise ServingError(f"cpu_backend={cpu_backend!r}; expected one of {CPU_BACKENDS}")
    check_model(model_path)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        if replicas is not None and not 1 <= replicas <= gpus:
            raise ServingError(f"replicas={replicas} on a cluster of {gpus} GPU(s); expected "
                               f"1 to {gpus}: one replica per GPU")
        count, backend, actor = replicas or gpus, "cupy", {"num_gpus": 1, "num_cpus": 1}
    else:
        count, backend, actor = replicas or 1, cpu_backend, {"num_cpus": 1}
    logger.info("%d replica(s), engine nodes on %s", count, backend)
    dep = deployment(max_batch_size, batch_wait_timeout_s).options(
        num_replicas=count, ray_actor_options=actor,
        # Serve warns, and batches stay small, when fewer requests may wait in a
        # replica than one batch holds (a request carries at least one row)
        max_ongoing_requests=max(100, 2 * max_batch_size))
    return dep.bind(model_path, backend, max_batch_size, signature, outputs, pad,
                    backend == "cupy" if warmup is None else warmup)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m workflows.serving", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a converted (or original) .pb, SavedModel "
                   "directory or plan")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="most rows one model run takes (default 32)")
    p.add_argument("--batch-wait-timeout-s", type=float, default=0.005,
                   help="how long a batch waits for more requests (default 0.005 s)")
    p.add_argument("--replicas", type=int, help="replicas (default: one per GPU, else 1)")
    p.add_argument("--cpu-backend", choices=CPU_BACKENDS, default="tensorflow",
                   help="CPU replicas: engine nodes run their TensorFlow segments (default) "
                        "or the engines on the NumPy backend")
    p.add_argument("--signature", help="SavedModel signature (default serving_default)")
    p.add_argument("--outputs", action="append", help="outputs to answer (default: all)")
    p.add_argument("--no-pad", action="store_true",
                   help="run each batch at its own size instead of padding to a power of two")
    p.add_argument("--address", help="a running Ray cluster (default: start a local one)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import ray  # optional dependency (the [serve] extra): said in one line when missing
        from ray import serve  # (as above)
    except ImportError:
        print("error: workflows.serving needs Ray Serve; expected it installed: "
              "pip install 'cupyrt[serve]'", file=sys.stderr)
        return 1
    try:
        check_model(args.model)
    except ServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ray.init(address=args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    try:
        app = build_app(os.path.abspath(args.model), args.max_batch_size,
                        args.batch_wait_timeout_s, args.replicas, args.cpu_backend,
                        args.signature, args.outputs, not args.no_pad)
        serve.run(app, name="cupyrt", route_prefix="/")
    except ServingError as exc:           # replicas on a GPU cluster
        print(f"error: {exc}", file=sys.stderr)
        serve.shutdown()
        ray.shutdown()
        return 1
    print(f"serving {args.model} at http://{args.host}:{args.port}/ (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
