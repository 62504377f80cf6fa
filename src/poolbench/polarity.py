"""Helpers the generated evaluation sets share (:mod:`poolbench.tailprobe`, :mod:`poolbench.naturaltail`).

Text normalisation as the sets store it, the two lexicon scorers (VADER, AFINN; loaded once), the
TF-IDF + logistic-regression classifier both train on IMDB train, and the versions of the tools
that shaped a set (for its datasheet).
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata

from poolbench.text import clean


def normalise(text: str) -> str:
    """``<br />`` blanked and runs of whitespace collapsed to one space, ends trimmed."""
    return " ".join(clean(text).split())


@functools.lru_cache(maxsize=1)
def vader_analyzer():
    """VADER's ``SentimentIntensityAnalyzer`` (vaderSentiment), loaded once."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@functools.lru_cache(maxsize=1)
def afinn_lexicon():
    """The English AFINN lexicon scorer (afinn), loaded once."""
    from afinn import Afinn

    return Afinn(language="en")


def _lower_clean(text: str) -> str:
    return clean(text).lower()


def tfidf_logreg(ngrams: int = 1, C: float = 4.0, random_state: int | None = None):
    """TF-IDF (1..``ngrams``-grams, sublinear tf, min_df 2, ``<br />`` blanked, lower-cased) + L2
    logistic regression (liblinear): the bag-of-words classifier both sets fit on IMDB train."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(preprocessor=_lower_clean, ngram_range=(1, int(ngrams)), min_df=2, sublinear_tf=True),
        LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=random_state),
    )


def tool_versions(dists) -> dict[str, str]:
    """Python's version and each installed distribution's (``"not installed"`` where absent)."""
    out = {"python": platform.python_version()}
    for name in dists:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
