"""Expand the user's paths (files, folders, globs) into a sorted list of files."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ember.ingest.readers import Skipped


def expand_paths(paths: list[str]) -> tuple[list[Path], list[Skipped]]:
    """Files to read, and the paths that name nothing (skipped, with why)."""
    files: set[Path] = set()
    missing: list[Skipped] = []
    for spec in paths:
        path = Path(spec).expanduser()
        if path.is_dir():
            files |= {p for p in path.rglob("*") if p.is_file() and not _hidden(p, path)}
        elif path.is_file():
            files.add(path)
        elif matches := glob.glob(str(path), recursive=True):
            files |= {Path(m) for m in matches if Path(m).is_file()}
        else:
            missing.append(Skipped(spec, "no such file, folder or glob match"))
    return sorted(p.resolve() for p in files), missing


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def file_size(path: str) -> int:
    """Bytes of a file; 0 if it cannot be read (it is then skipped with a reason later)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
