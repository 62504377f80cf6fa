"""The probe and the natural tail set for any Hugging Face classifier (``poolbench export-data``,
``score``, ``compare`` and ``export``).

* :mod:`.evaldata`: both sets as a Hugging Face dataset folder (parquet, a dataset card that
  ``datasets.load_dataset`` reads, MANIFEST.json with versions and hashes, reference rows).
* :mod:`.sets`: the statistics of one classifier per set, by the study's own code
  (:mod:`poolbench.analysis`, :mod:`poolbench.stats`); the ``evaluate`` metric (:data:`METRIC`) uses them.
* :mod:`.scoring`: any ``*ForSequenceClassification`` folder over the sets, with an invariance self-check;
  :mod:`.results` (results.json, compare) and :mod:`.verdict` (VERDICT.md) write what it found.
* :mod:`.export`: a trained run whose pooling the Hugging Face class computes as a standard model folder.

Bad input raises :class:`HubError` with one sentence; the command line prints it.
"""

from pathlib import Path

from .common import HubError
from .export import EXPORTABLE, export_run
from .evaldata import DATASHEETS, SETS, export_data, pipeline_datasheets, pipeline_dirs, pipeline_files, set_files
from .scoring import HFClassifier, invariance, score
from .sets import natural_report, probe_report

METRIC = str(Path(__file__).parent / "metric" / "tailprobe.py")  # evaluate.load(METRIC)

__all__ = ["DATASHEETS", "EXPORTABLE", "METRIC", "SETS", "HFClassifier", "HubError", "export_data", "export_run",
           "invariance", "natural_report", "pipeline_datasheets", "pipeline_dirs", "pipeline_files", "probe_report",
           "score", "set_files"]
