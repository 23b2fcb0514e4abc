"""Progress display for the command line: a bar on a terminal, plain lines otherwise.

    with Progress("calibrating", total=8) as bar:
        for batch in batches:
            ...
            bar.update()

    with build_progress():            # engine builds anywhere in the process report here
        converter.convert()

On a terminal the bar is tqdm's when tqdm is installed (an optional dependency),
else our own one-line bar redrawn with a carriage return. When the stream is
not a terminal (a log file, CI, a pipe) a bar would leave hundreds of
carriage-return frames behind, so we write one plain line at the start, a few
in between (every 25%), and one at the end.
"""
import contextlib
import sys
import time

from engine import builder


def _is_tty(stream):
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:         # a closed stream
        return False


def _tqdm():
    try:
        from tqdm import tqdm  # optional dependency (a plain text bar without it)
    except ImportError:
        return None
    return tqdm


class Progress:
    """One task of ``total`` steps. ``mode``: "auto" (bar on a terminal, lines
    otherwise), "bar", "lines" or "off"."""
    def __init__(self, what, total, stream=None, mode="auto", width=30):
        self.what, self.total, self.done = what, max(int(total), 0), 0
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if _is_tty(self.stream) else "lines"
        self.mode, self.width = mode, width
        self.detail = ""
        self._t0 = time.perf_counter()
        self._next_line = 0                      # next quarter to announce in "lines" mode
        self._tqdm = None
        if mode == "bar" and _tqdm() is not None:
            self._tqdm = _tqdm()(total=self.total, desc=what, file=self.stream, leave=True)
        elif mode == "lines":
            self._line(f"{what}: 0/{self.total}")
            self._next_line = 1

    def _line(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, n=1, detail=""):
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        self.detail = detail
        if self._tqdm is not None:
            self._tqdm.update(n)
            if detail:
                self._tqdm.set_postfix_str(detail, refresh=False)
        elif self.mode == "bar":
            self._draw()
        elif self.mode == "lines" and self.total and self.done < self.total:
            quarter = 4 * self.done // self.total
            if quarter >= self._next_line:
                self._next_line = quarter + 1
                self._line(f"{self.what}: {self.done}/{self.total}"
                           + (f" ({detail})" if detail else ""))

    def _draw(self):
        filled = self.width * self.done // max(self.total, 1)
        tail = f" {self.detail[:40]}" if self.detail else ""
        self.stream.write(f"\r{self.what} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{self.done}/{self.total}{tail}\033[K")
        self.stream.flush()

    def close(self):
        seconds = time.perf_counter() - self._t0
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.mode == "bar":
            self.detail = ""
            self._draw()
            self.stream.write(f" {seconds:.1f} s\n")
            self.stream.flush()
        elif self.mode == "lines":
            self._line(f"{self.what}: {self.done}/{self.total} done in {seconds:.1f} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BuildProgress:
    """Listens to engine.builder's progress events: one line per engine build and,
    while a device times tactics, a per-layer bar."""
    def __init__(self, stream=None, mode="auto"):
        self.stream, self.mode = stream or sys.stderr, mode
        self.builds = 0
        self._bar = None
        self._stage = None

    def __call__(self, event, **info):
        if event == "build_start":
            self.builds += 1
            self._stage = None
            if self.mode != "off":
                self.stream.write(f"engine build {self.builds}: {info['layers']} layers\n")
                self.stream.flush()
        elif event == "stage":
            self._stage = info["name"]
        elif event == "layer":
            if self._bar is None:
                self._bar = Progress(f"engine build {self.builds}: timing tactics",
                                     info["total"], self.stream, self.mode)
            self._bar.update(detail=info["name"])
        elif event == "build_end":
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self.mode != "off":
                self.stream.write(f"engine build {self.builds}: done, {info['layers']} layers "
                                  f"after the builder's passes, {info['seconds']:.2f} s\n")
                self.stream.flush()


@contextlib.contextmanager
def build_progress(stream=None, mode="auto"):
    """Show every engine build of this process while the block runs."""
    listener = BuildProgress(stream, mode)
    builder.PROGRESS_LISTENERS.append(listener)
    try:
        yield listener
    finally:
        builder.PROGRESS_LISTENERS.remove(listener)
        if listener._bar is not None:         # a build that raised: end its bar's line
            listener._bar.close()
