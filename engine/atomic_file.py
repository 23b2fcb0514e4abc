"""Files written whole or not at all.

A plan, a converted .pb or a manifest that is half-written (disk full, a
killed process, an exception in the middle) must never be mistaken for a good
one, and must never destroy the good file it was replacing. So every writer
goes through ``write_bytes``: the data goes to a temporary file in the same
folder (same filesystem: the rename below is atomic there), is flushed to the
disk, and only then renamed over the destination. On any failure the
temporary file is removed and the destination is as it was.
"""
import os
import tempfile

# how much one write() call hands the OS; a failure between chunks is the
# "mid-write" failure tests inject through _write_chunk
CHUNK = 1 << 24


def _write_chunk(f, chunk):
    f.write(chunk)


def write_bytes(path, data):
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` atomically; returns ``path``."""
    if isinstance(data, str):
        data = data.encode()
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data)
            for start in range(0, len(view), CHUNK):
                _write_chunk(f, view[start:start + CHUNK])
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; a saved model is as readable as any new file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
