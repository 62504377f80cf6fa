"""What the hub commands share: their error, quiet model loading and the ``--out`` folder rule."""

from __future__ import annotations

import contextlib
from pathlib import Path


class HubError(ValueError):
    """Bad input to export-data, score, compare or export; the message is one sentence naming the problem."""


def check_out(out: Path, marker: str, what: str, overwrite: bool = False) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; even then, replace only an earlier output of the same
    command (a folder holding ``marker``), never a folder of something else."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise HubError(f"{out} exists and is not a folder; give a new folder")
    if not any(out.iterdir()):
        return
    if not (out / marker).exists():
        raise HubError(f"{out} exists and is not {what}; give a new folder")
    if not overwrite:
        raise HubError(f"{out} already holds {what}; give a new folder, or --overwrite to replace it")


@contextlib.contextmanager
def quiet_transformers():
    """No warnings or progress bars from transformers while loading: errors are ours to word."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
