"""Atomic writes: one helper for every file or folder the pipeline produces.

A reader (or a Snakemake rerun after a kill) sees either the previous file or the complete new one,
never a partial one: content is written under a hidden temporary name in the same folder and
renamed onto the target, which is atomic within one filesystem.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` with a temporary file path beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when write() failed
    return path


def atomic_dir(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmpdir)`` with an empty temporary folder beside ``path``; move it to ``path`` when done.

    Leftovers of a killed earlier attempt (``.<name>.partial-*``) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        tmp.chmod(0o755)
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_parquet(path: str | Path, table, metadata: dict[bytes, bytes] | None = None) -> Path:
    """``table`` (a DataFrame) as parquet; ``metadata`` is added to the file's schema metadata."""
    if not metadata:
        return atomic_write(path, lambda p: table.to_parquet(p, index=False))
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **metadata})
    return atomic_write(path, lambda p: pq.write_table(arrow, p))


def write_csv(path: str | Path, table, **kw) -> Path:
    return atomic_write(path, lambda p: table.to_csv(p, index=False, **kw))
