"""Tail-sentiment probe (v3): does a pooled representation catch a verdict in the LAST sentence?

Every probe example is a *body* (sentences, in order, of one IMDB review) with a *verdict* (the
final sentence of another IMDB review, that judges the film and passes VADER, AFINN and an
IMDB-trained bag-of-words confidently) inserted at the start, in the middle or at the end. The
label is the verdict's polarity; the body either agrees with it (``condition="agree"``) or leans
the other way (``condition="contrast"``) without a verdict-like sentence of its own. Bodies come
from another review of the verdict's film where the data allow. Texts are short (fit in
``short_max_tokens`` of every tokenizer) or long (longer than ``long_min_tokens``).

Modules: :mod:`.common` (config, helpers), :mod:`.filters` (the verdict filter), :mod:`.generate`
(the build), :mod:`.checks`, :mod:`.baselines`, :mod:`.audit` (the human reading), :mod:`.datasheet`.
The job-facing API is :func:`build`, :func:`run_checks`, :func:`assert_checks`, :func:`datasheet`
and :func:`baselines`.
"""

from .audit import audit_sample, check_audit
from .baselines import BASELINES, baseline_predictions, baselines
from .baselines import from_checks as baselines_from_checks
from .checks import assert_checks, check_truncation, run_checks
from .common import (
    CONDITIONS,
    DEFAULTS,
    LENGTH_BINS,
    POSITIONS,
    RATINGS,
    SPLITS,
    VERSION,
    bodies_of,
    compose,
    config,
    key,
    remove_span,
    review_id,
    review_sentences,
    split_sentences,
    verdicts_of,
)
from .datasheet import datasheet, file_hashes
from .filters import content_reason
from .generate import COLUMNS, build

__all__ = [
    "BASELINES", "COLUMNS", "baselines_from_checks", "CONDITIONS", "DEFAULTS", "LENGTH_BINS", "POSITIONS", "RATINGS", "SPLITS", "VERSION",
    "assert_checks", "audit_sample", "baseline_predictions", "baselines", "bodies_of", "build", "check_audit",
    "check_truncation", "compose", "config", "content_reason", "datasheet", "file_hashes", "key", "remove_span",
    "review_id", "review_sentences", "run_checks", "split_sentences", "verdicts_of",
]  # fmt: skip
