"""Natural tail set: real IMDB test reviews whose decisive sentence sits at one end.

An evaluation set only (every IMDB-trained run is scored on it; nothing trains on it). No splice:
each item is one IMDB **test** review, unchanged except for whitespace.

Selection rule (deterministic; thresholds in :data:`DEFAULTS`, see :func:`config`):

1. **Reviews.** IMDB test reviews, minus those whose text also occurs in IMDB train and minus
   repeated texts within test (the first in data order is kept). Each review is split into sentences
   with pysbd (:func:`poolbench.text.sentence_spans`). Texts are whitespace-normalised (``<br />``
   blanked, runs of whitespace collapsed to one space): ``original`` is the review, changed in
   whitespace only.
2. **Verdict.** ``set="tail"``: the last sentence; ``set="head"`` (the mirror): the first. It must have
   ``verdict_min_words``–``verdict_max_words`` words, a VADER compound of at least ``vader_threshold``
   in the rating's direction (``label`` 1: ≥ +t; ``label`` 0: ≤ −t) and, when ``afinn_agree``, a
   non-zero AFINN score of the same sign.
3. **Body reads the other way**, by two readers of different kinds. The other sentences (at least
   ``body_min_sentences`` of them and ``body_min_words`` words) are scored by a TF-IDF +
   logistic-regression classifier trained on IMDB **train** only (:func:`classifier`): the
   probability it gives the rating's direction must be at most ``body_max_p``. And the mean VADER
   compound of the body's sentences, signed so that the rating's direction is positive, must be at
   most ``body_vader_max`` (VADER's own neutral band is ±0.05).

Each selected review gives three items (``variant``): ``original`` (the review), ``removed`` (the
verdict deleted: the body alone) and ``moved`` (the verdict moved to the other end, joined by one
space). ``label`` is
always the rating's direction, also for ``removed``, whose text reads the other way: a model that
follows the text *should* miss it there. ``text[verdict_start:verdict_end]`` is the verdict exactly
(``-1`` for ``removed``).

:func:`build` makes the table, :func:`checks` measures it (integrity asserts and non-circular
sanity numbers), :func:`datasheet` writes the Markdown datasheet and :func:`write` writes all three
atomically.

Modules: :mod:`.common` (config, constants, sentence splits, scorers, the classifier),
:mod:`.build`, :mod:`.checks` and :mod:`.datasheet` (datasheet, hashes, writing).
"""

from .build import build, candidates, compose, eligible_reviews, review_id
from .checks import CONNECTIVES, assert_checks, checks, integrity
from .common import (
    CLASSIFIERS,
    COLUMNS,
    DEFAULTS,
    SCORE_DECIMALS,
    SETS,
    VARIANTS,
    VERSION,
    afinn,
    classifier,
    config,
    normalise,
    p_label,
    split_at_end,
    vader,
)
from .datasheet import content_sha256, datasheet, parquet_bytes, versions, write

__all__ = [
    "COLUMNS", "CONNECTIVES", "DEFAULTS", "SCORE_DECIMALS", "SETS", "VARIANTS", "VERSION", "afinn", "assert_checks",
    "build", "candidates", "checks", "classifier", "compose", "config", "content_sha256", "datasheet",
    "eligible_reviews", "integrity", "normalise", "p_label", "parquet_bytes", "review_id", "split_at_end", "vader",
    "versions", "write",
]  # fmt: skip
