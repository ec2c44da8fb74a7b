"""Writing files so that an output is complete or absent (no torch, no Scipion).

Every engine output (tables, volumes, model files, JSON) goes through :func:`atomic_write`:
a crash, a full disk or a SIGKILL never leaves a half-written file under the final name.
"""
import contextlib
import os
import tempfile


def _temporary_prefix(path):
    """Name prefix of the temporaries :func:`atomic_write` writes ``path`` through."""
    return ".tmp_" + os.path.basename(path) + "_"


@contextlib.contextmanager
def atomic_write(path, suffix=""):
    """Yield a temporary path beside ``path`` to write to: it replaces ``path`` when the block
    ends, and is removed if the block fails, so an output is complete or absent."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temporaries(path, suffix=""):
    """Remove what an :func:`atomic_write` of ``path`` left when its process was killed (a
    SIGKILL cannot be caught, so the block's own clean-up never ran)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    prefix = _temporary_prefix(path)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(prefix) and name.endswith(suffix):
                os.remove(os.path.join(folder, name))


def atomic_text(path, text):
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        fh.write(text)
    return path
