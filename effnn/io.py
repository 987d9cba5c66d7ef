"""Atomic file writes: a killed process must never leave a truncated file where a good one stood."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from effnn.errors import EffnnError


class OutputExistsError(EffnnError, FileExistsError):
    """An output directory already holds results that a new run would overwrite."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def has_content(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and is not an empty directory."""
    path = Path(path)
    if not path.exists():
        return False
    return not path.is_dir() or any(path.iterdir())


def refuse_overwrite(path: str | os.PathLike, what: str, overwrite: bool) -> None:
    """Raise OutputExistsError (one line, naming both ways out) when ``path`` holds something and
    ``overwrite`` is false; checked before the expensive work so the refusal costs nothing."""
    if not overwrite and has_content(path):
        raise OutputExistsError(f"{path} already holds {what}; pass overwrite=true to replace it as a whole, "
                                f"or choose another out= directory")


@contextmanager
def atomic_directory(path: str | os.PathLike, what: str = "output", overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path``; when the block succeeds, swap it in as ``path``.

    Readers of ``path`` see the old directory or the new one, never a mix: a failure (full disk, a
    failed check, a kill) inside the block leaves ``path`` untouched and removes the temporary. With
    ``overwrite`` the old directory is renamed aside, the new one renamed in, and the old one deleted;
    a kill between the two renames leaves the old one complete at ``.NAME.old-*`` beside ``path``.
    """
    path = Path(path).absolute()
    refuse_overwrite(path, what, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give it the permissions mkdir would
        _swap_in(tmp, path, what, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, path: Path, what: str, overwrite: bool) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # an empty directory (e.g. made by Hydra for its run dir) holds nothing to keep
    elif path.exists():
        refuse_overwrite(path, what, overwrite)  # something appeared while we worked
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, old / path.name)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, path)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
