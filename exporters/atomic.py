"""Files that appear under their final name only once completely written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "w") -> Iterator[IO]:
    """Writes to a hidden temporary file beside `path`, then renames it over `path`.

    A crash or an error leaves no file under the final name (nor a changed old one).
    """
    with atomic_path(path) as temporary:
        encoding = None if "b" in mode else "utf-8"
        with open(temporary, mode, encoding=encoding) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary file beside `path`, for writers that need a file name (GDAL,
    zip), renamed over `path` once the block completes and removed on error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the extension: some writers (GDAL) choose the format by it.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
