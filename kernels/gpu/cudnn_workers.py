"""Worker processes that build cuDNN plans while the caller does something else.

Why processes: building a runtime-fusion plan compiles CUDA code inside cuDNN (seconds
each), and the frontend's Python binding holds the GIL for the whole build, so threads
would run them one at a time and stall the caller too. A worker builds one plan of one
graph (``build_serialized``, over cudnn_graphs.define_graph) and answers with it
serialized; the caller deserializes it, which compiles nothing.

Protocol: plain subprocesses (not multiprocessing: a spawned pool re-imports the user's
``__main__``, which would run an unguarded script once per worker), one JSON request per
line on stdin, one JSON answer per line on a private copy of stdout (the worker points
its own fd 1 at stderr, so whatever a library prints cannot corrupt the answers). One
thread here per worker feeds it tasks from a shared queue; it waits on the pipe with the
GIL released. A worker that sat idle ``idle_s`` seconds exits (its CUDA context goes
with it); the next task starts a fresh one.
"""
import atexit
import concurrent.futures as futures
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time

from . import cudnn_graphs as G
from . import cudnn_matmul  # noqa: F401  (registers the matmul spec kind for spec_from_json)
from . import cudnn_int8  # noqa: F401  (registers the INT8 conv spec kind for spec_from_json)

log = logging.getLogger(__name__)

IDLE_S = 60.0
WORKER_CODE = "from kernels.gpu.cudnn_workers import main; main()"


class PlanWorkers:
    """Up to ``workers`` worker processes; ``submit`` returns a Future of the answer.

    ``command``: the worker's command line (tests give one with a stand-in builder);
    by default this interpreter running ``main()`` with the caller's ``sys.path``."""

    def __init__(self, workers, command=None, idle_s=IDLE_S, env=None):
        if workers < 1:
            raise ValueError(f"cuDNN plan workers: found {workers}, expected at least 1")
        self.workers = workers
        self.command = command or [sys.executable, "-c", WORKER_CODE, str(idle_s)]
        self.env = env if env is not None else dict(
            os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._tasks = queue.Queue()
        self._threads = []
        self._procs = set()
        self._lock = threading.Lock()
        self._closed = False
        self.started = 0               # worker processes started (tests, logs)

    def submit(self, spec, device_id, index):
        """Queue "build plan ``index`` of ``spec`` on ``device_id``"."""
        fut = futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cuDNN plan workers are closed")
            if len(self._threads) < self.workers:
                t = threading.Thread(target=self._serve, name=f"cudnn-plans-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        self._tasks.put((fut, {"spec": spec.to_json(), "device": device_id, "index": index}))
        return fut

    def _spawn(self):
        proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=None, text=True, bufsize=1)
        with self._lock:
            self._procs.add(proc)
            self.started += 1
        return proc

    def _ask(self, proc, request):
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"cuDNN plan worker exited (code {proc.wait()})")
        return json.loads(line)

    def _serve(self):
        proc = None
        while True:
            task = self._tasks.get()
            if task is None:
                break
            fut, request = task
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                for attempt in (0, 1):    # an idle worker may have exited just now: once more
                    if proc is None or proc.poll() is not None:
                        proc = self._spawn()
                    try:
                        answer = self._ask(proc, request)
                        break
                    except (OSError, RuntimeError, ValueError):
                        self._stop(proc)
                        proc = None
                        if attempt or self._closed:
                            raise
                fut.set_result(answer)
            except Exception as e:        # noqa: BLE001  (the caller builds that plan itself)
                fut.set_exception(e)
        if proc is not None:
            self._stop(proc)

    def _stop(self, proc):
        with self._lock:
            self._procs.discard(proc)
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self):
        """Stop every worker (queued tasks are cancelled)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads, procs = list(self._threads), list(self._procs)
        while True:
            try:
                fut, _ = self._tasks.get_nowait()
                fut.cancel()
            except queue.Empty:
                break
            except TypeError:         # a stop marker
                continue
        for _ in threads:
            self._tasks.put(None)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for t in threads:
            t.join(timeout=5)


_shared = {}
_shared_lock = threading.Lock()


def shared(workers):
    """The process's PlanWorkers of that size (made on first use, closed at exit)."""
    with _shared_lock:
        pool = _shared.get(workers)
        if pool is None:
            pool = _shared[workers] = PlanWorkers(workers)
            atexit.register(pool.close)
        return pool


def build_serialized(spec, device_id, index):
    """Build plan ``index`` of ``spec``'s graph and return it serialized, as a
    JSON-safe dict: ``index``, ``plan_count``,
    ``name``, ``seconds`` (the build), ``blob`` (None when the plan is not a
    runtime-compiled one or does not serialize: the caller builds it itself) or
    ``error`` (it did not build)."""
    import cupy as cp     # optional: only a worker on a GPU machine gets here
    cudnn = G._frontend()
    if cudnn is None:
        raise RuntimeError(G.unavailable_reason())
    cp.cuda.Device(device_id).use()
    g, _ = G.define_graph(cudnn, spec, G._handle(cudnn, device_id))
    out = {"index": index, "plan_count": g.get_execution_plan_count()}
    if index >= out["plan_count"]:
        return dict(out, error=f"plan {index} of {out['plan_count']}: no such plan")
    t0 = time.perf_counter()
    try:
        g.build_plan_at_index(index)
    except Exception as e:                  # noqa: BLE001  (reported: the plan scores inf)
        return dict(out, seconds=time.perf_counter() - t0, error=f"{type(e).__name__}: {e}".splitlines()[0])
    out.update(seconds=time.perf_counter() - t0, name=g.get_plan_name_at_index(index), blob=None)
    if not G.runtime_compiled(cudnn, g, index):
        out["serialize_error"] = "not a runtime-compiled engine (built by the caller, in milliseconds)"
        return out
    try:
        out["blob"] = G.encode_blob(G.serialize_plan(g))
    except Exception as e:                  # noqa: BLE001  (not serializable: built by the caller)
        out["serialize_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return out


def build_request(request):
    """The default builder: one plan of one conv graph."""
    return build_serialized(G.spec_from_json(request["spec"]), request["device"], request["index"])


def main(build=None, idle_s=None):
    """A worker: answer requests from stdin until it closes or ``idle_s`` pass without one."""
    if idle_s is None:
        idle_s = float(sys.argv[1]) if len(sys.argv) > 1 else IDLE_S
    build = build or build_request
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                    # library chatter goes to stderr, not into the answers
    sys.stdout = sys.stderr
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], idle_s)
        if not ready:
            return
        line = sys.stdin.readline()
        if not line:
            return
        request = json.loads(line)
        t0 = time.perf_counter()
        try:
            answer = build(request)
        except Exception as e:        # noqa: BLE001  (answered: the caller builds it itself)
            answer = {"index": request.get("index"), "seconds": time.perf_counter() - t0,
                      "worker_error": f"{type(e).__name__}: {e}".splitlines()[0]}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
