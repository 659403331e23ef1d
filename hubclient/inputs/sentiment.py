"""Sentiment scoring of generated continuations (for ``hub intervene steer``), pluggable.

The default classifier is a scikit-learn pipeline of character n-gram TF-IDF features
(``char_wb``, n = 1..4, which works for Chinese without word segmentation) and a logistic
regression, trained on the positive and negative rows of the labelled sentiment data
(``<data>/{english,spanish,chinese}/*.csv``, columns ``text,label,source``; neutral rows are
left out, so the score is binary). It trains on ``train.csv`` where a language has one and on
``valid.csv`` otherwise (Chinese), and reports accuracy on each language's ``test.csv``, which
it never trains on. Training takes a few seconds; nothing is cached or copied.

Any other scorer plugs in through ``--classifier module:attribute``: the attribute is called
with the data folder and must return an object with ``positive_probability(texts) ->
sequence of floats in [0, 1]`` and ``describe() -> dict`` (recorded in the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

from hubclient.errors import HubError

LANGUAGES = ("english", "spanish", "chinese")
LABELS = ("negative", "positive")


class SentimentClassifier(Protocol):
    """What ``hub intervene steer`` needs from a sentiment scorer."""

    def positive_probability(self, texts: list[str]) -> Any:
        """P(positive) of each text, ``[len(texts)]`` floats in [0, 1]."""

    def describe(self) -> dict[str, Any]:
        """What the manifest records (name, training data, held-out accuracy…)."""


def read_split(data: Path, language: str, split: str, labels: tuple[str, ...] | None = LABELS) -> Any:
    """Rows of ``<data>/<language>/<split>.csv`` (``text``, ``label``), optionally only ``labels``.

    Raises:
        HubError: a missing folder/file or a file without ``text``/``label`` columns.
    """
    import polars as pl

    path = Path(data) / language / f"{split}.csv"
    if not path.is_file():
        raise HubError(f"sentiment file {path} does not exist; pass the sentiment data folder (…/shared/data/sentiment) with --sentiment-data")
    frame = pl.read_csv(path, infer_schema=False)
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise HubError(f"{path} has no column(s) {sorted(missing)} (it has {frame.columns}); expected text,label,source")
    frame = frame.select("text", "label").drop_nulls()
    if labels is not None:
        frame = frame.filter(pl.col("label").is_in(list(labels)))
    return frame


def training_split(data: Path, language: str) -> str:
    """``train`` when the language has a train.csv, else ``valid`` (the Chinese data)."""
    return "train" if (Path(data) / language / "train.csv").is_file() else "valid"


@dataclass
class CharNgramClassifier:
    """TF-IDF character n-grams (1..4, ``char_wb``) + logistic regression, binary pos/neg.

    Attributes:
        pipeline: the fitted scikit-learn ``Pipeline``.
        accuracy: held-out (test.csv) accuracy per language, positive/negative rows only.
        trained_on: rows used for training per language and split.
    """

    pipeline: Any
    accuracy: dict[str, float] = field(default_factory=dict)
    trained_on: dict[str, str] = field(default_factory=dict)

    @classmethod
    def train(cls, data: Path, languages: tuple[str, ...] = LANGUAGES, seed: int = 0) -> "CharNgramClassifier":
        """Fit on the training split of every language and score each language's test split.

        Raises:
            HubError: missing data files.
        """
        import polars as pl
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        frames, trained_on = [], {}
        for language in languages:
            split = training_split(data, language)
            frame = read_split(data, language, split)
            frames.append(frame)
            trained_on[language] = f"{split}.csv ({frame.height} positive/negative rows)"
        train = pl.concat(frames)
        pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True),
            LogisticRegression(max_iter=2000, C=4.0, random_state=seed),
        )
        pipeline.fit(train["text"].to_list(), (train["label"] == "positive").to_numpy())
        model = cls(pipeline=pipeline, trained_on=trained_on)
        for language in languages:
            test = read_split(data, language, "test")
            predicted = model.positive_probability(test["text"].to_list()) > 0.5
            model.accuracy[language] = round(float((predicted == (test["label"] == "positive").to_numpy()).mean()), 4)
        return model

    def positive_probability(self, texts: list[str]) -> Any:
        """P(positive) per text (``[len(texts)]`` float array); empty text scores 0.5-ish."""
        import numpy as np

        if not texts:
            return np.zeros(0)
        return self.pipeline.predict_proba(list(texts))[:, 1]

    def describe(self) -> dict[str, Any]:
        """Manifest record: method, training rows, held-out accuracy per language."""
        return {
            "name": "char-ngram",
            "method": "scikit-learn TfidfVectorizer(char_wb, 1-4) + LogisticRegression, positive vs negative",
            "trained_on": self.trained_on,
            "heldout_accuracy": self.accuracy,
            "heldout_split": "test.csv (positive/negative rows; never trained on)",
        }


def load_classifier(spec: str, data: Path | None) -> SentimentClassifier | None:
    """Resolve ``--classifier``: ``char-ngram`` (default), ``none``, or ``module:attribute``.

    Raises:
        HubError: ``char-ngram`` without a data folder, an unimportable plug-in, or a plug-in
            object without ``positive_probability``.
    """
    if spec == "none":
        return None
    if spec == "char-ngram":
        if data is None:
            raise HubError("the char-ngram classifier trains on the sentiment data: pass --sentiment-data DIR, or --classifier none")
        return CharNgramClassifier.train(Path(data))
    if ":" not in spec:
        raise HubError(f"unknown --classifier {spec!r}; use char-ngram, none or module:attribute")
    module, attr = spec.split(":", 1)
    try:
        factory = getattr(import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise HubError(f"cannot load --classifier {spec!r}: {exc}") from exc
    classifier = factory(data)
    if not hasattr(classifier, "positive_probability"):
        raise HubError(f"--classifier {spec!r} returned {type(classifier).__name__}, which has no positive_probability(texts)")
    return classifier
