"""Files that appear under their final name only once completely written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

TEMPORARY_MARK = ".tmp"
"""Temporary files and folders are hidden and carry this mark: `.<name>.<random>.tmp[.ext]`."""


def is_temporary(path: Path) -> bool:
    """Whether `path` is a temporary of this module (a write that has not completed)."""
    return path.name.startswith(".") and TEMPORARY_MARK in path.name


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
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TEMPORARY_MARK}{path.suffix}", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yields a hidden temporary folder beside `path` to write into, then puts it in place of `path`.

    A crash or an error leaves `path` as it was; a folder that was there is replaced whole,
    so files of an older run never mix with the new ones.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMPORARY_MARK, dir=path.parent))
    try:
        yield temporary
        os.chmod(temporary, 0o755)
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, retired / path.name)
            os.replace(temporary, path)
            shutil.rmtree(retired)
        else:
            os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
