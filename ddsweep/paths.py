"""Where a command writes its output (`--out`, `--figures`): checked before any work, one line when unusable.

A missing folder is refused, not created: a typo in a path (`--out figs/x.png` for
`fig/x.png`) should not leave a new folder behind. The line says how to make it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ddsweep.errors import UserError


def _check_folder(folder: Path, option: str, given: Path) -> None:
    if not folder.exists():
        ancestor = next((p for p in folder.parents if p.exists()), None)
        if ancestor is not None and not ancestor.is_dir():
            raise UserError(f"{option} {given}: {ancestor} is a file, not a folder")
        raise UserError(f"{option} {given}: no folder {folder} (create it first: mkdir -p {folder})")
    if not folder.is_dir():
        raise UserError(f"{option} {given}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        why = os.strerror(errno.EROFS if read_only else errno.EACCES)
        raise UserError(f"{option} {given}: cannot write into {folder}: {why}")


def output_file(path: str | Path, option: str = "--out") -> Path:
    """`path` if a file can be written there (its folder exists and is writable), else a one-line UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name in it")
    _check_folder(path.parent if str(path.parent) else Path("."), option, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: file is not writable")
    return path


def output_parent(path: str | Path, option: str = "--out") -> Path:
    """`path` if the folder it would be written into exists and is writable (a file or a folder to make)."""
    path = Path(path)
    _check_folder(path.parent if str(path.parent) else Path("."), option, path)
    return path


def output_folder(path: str | Path, option: str) -> Path:
    """`path` if it is an existing, writable folder, else a one-line UserError (a missing one is not created)."""
    path = Path(path)
    _check_folder(path, option, path)
    return path
