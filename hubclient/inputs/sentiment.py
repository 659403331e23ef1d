"""Sentiment scoring of generated continuations (for ``hub intervene steer``), pluggable.

The default classifier is a scikit-learn pipeline of character n-gram TF-IDF features
(``char_wb``, n = 1..4, which works for Chinese without word segmentation) and a logistic
regression, trained on the positive and negative rows of the labelled sentiment data
(``<data>/{english,spanish,chinese}/*.csv``, columns ``text,label,source``; neutral rows are
left out, so the score is binary). It trains on ``train.csv`` where a language has one and on
``valid.csv`` otherwise (Chinese), and reports accuracy on each language's ``test.csv``, which
it never trains on. Training takes a few seconds; nothing is cached or copied.

``char-ngram3`` is the same pipeline trained on all three labels (positive, neutral,
negative), like the paper's three-class classifier
(``lxyuan/distilbert-base-multilingual-cased-sentiments-student``); its score
``P(pos) − P(neg)`` (:func:`sentiment_difference`) is the paper's sentiment measure
(paper-protocols.md A16; ``multilingual/intervention.py:44-54``).

:func:`protocol_prompts` gives the A16 prompts: a ``random.seed(0)`` sample of 1,000 training
rows per language with the language-keeping prefix.

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
LABELS3 = ("negative", "neutral", "positive")

#: The language-keeping prefixes of the A16 prompts (``multilingual/intervention.py:150-158``;
#: the Spanish one ends with a space).
PROTOCOL_PREFIX = {"chinese": "接下来的文字全部是中文的。", "spanish": "Todo el texto siguiente está en español. "}
#: The A16 steering words per language (``get_steering_words``, lines 94-106): (positive, negative).
STEERING_WORDS = {"english": ("Good", "Bad"), "spanish": ("Bueno", "Malo"), "chinese": ("好", "坏")}


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
    labels: tuple[str, ...] = LABELS

    @classmethod
    def train(cls, data: Path, languages: tuple[str, ...] = LANGUAGES, seed: int = 0, labels: tuple[str, ...] = LABELS) -> "CharNgramClassifier":
        """Fit on the training split of every language and score each language's test split.

        Args:
            labels: ``LABELS`` (positive vs negative) or ``LABELS3`` (with neutral).

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
            frame = read_split(data, language, split, labels)
            frames.append(frame)
            trained_on[language] = f"{split}.csv ({frame.height} {'/'.join(labels)} rows)"
        train = pl.concat(frames)
        pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True),
            LogisticRegression(max_iter=2000, C=4.0, random_state=seed),
        )
        if labels == LABELS:
            pipeline.fit(train["text"].to_list(), (train["label"] == "positive").to_numpy())
        else:
            pipeline.fit(train["text"].to_list(), train["label"].to_list())
        model = cls(pipeline=pipeline, trained_on=trained_on, labels=tuple(labels))
        for language in languages:
            test = read_split(data, language, "test", labels)
            if labels == LABELS:
                predicted = model.positive_probability(test["text"].to_list()) > 0.5
                truth = (test["label"] == "positive").to_numpy()
            else:
                predicted = pipeline.predict(test["text"].to_list())
                truth = test["label"].to_numpy()
            model.accuracy[language] = round(float((predicted == truth).mean()), 4)
        return model

    def positive_probability(self, texts: list[str]) -> Any:
        """P(positive) per text (``[len(texts)]`` float array); empty text scores 0.5-ish."""
        import numpy as np

        if not texts:
            return np.zeros(0)
        proba = self.pipeline.predict_proba(list(texts))
        if self.labels == LABELS:
            return proba[:, 1]
        return proba[:, list(self.pipeline.classes_).index("positive")]

    def positive_minus_negative(self, texts: list[str]) -> Any:
        """``P(pos) − P(neg)`` per text, ``[len(texts)]`` floats in [−1, 1] (the paper's
        score, ``multilingual/intervention.py:44-54``; binary classifier: ``2 P(pos) − 1``)."""
        import numpy as np

        if not texts:
            return np.zeros(0)
        if self.labels == LABELS:
            return 2 * self.positive_probability(texts) - 1
        proba = self.pipeline.predict_proba(list(texts))
        classes = list(self.pipeline.classes_)
        return proba[:, classes.index("positive")] - proba[:, classes.index("negative")]

    def describe(self) -> dict[str, Any]:
        """Manifest record: method, training rows, held-out accuracy per language."""
        return {
            "name": "char-ngram" if self.labels == LABELS else "char-ngram3",
            "method": f"scikit-learn TfidfVectorizer(char_wb, 1-4) + LogisticRegression, {' vs '.join(self.labels)}",
            "trained_on": self.trained_on,
            "heldout_accuracy": self.accuracy,
            "heldout_split": f"test.csv ({'/'.join(self.labels)} rows; never trained on)",
        }


@dataclass
class TransformersClassifier:
    """A transformers sequence classifier from a local folder (``--classifier hf:PATH``), used
    as the paper uses ``lxyuan/distilbert-base-multilingual-cased-sentiments-student``
    (``multilingual/intervention.py:44-54``): softmax over the labels, truncation to the model's
    length, ``P(pos)`` / ``P(neg)`` the labels whose name starts with ``pos`` / ``neg``
    (case-insensitive). Runs on the CPU, 16 texts a batch.

    Attributes:
        path: the folder (``config.json``, weights, tokenizer).
        model / tokenizer: the loaded transformers objects.
    """

    path: str
    model: Any = None
    tokenizer: Any = None

    @classmethod
    def load(cls, path: str) -> "TransformersClassifier":
        """Load from ``path``.

        Raises:
            HubError: a missing folder, or labels without a ``pos…`` and a ``neg…`` one.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not Path(path).is_dir():
            raise HubError(f"--classifier hf:{path}: no such folder; give a local transformers classifier folder")
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        names = [str(model.config.id2label[i]).lower() for i in range(model.config.num_labels)]
        if not any(n.startswith("pos") for n in names) or not any(n.startswith("neg") for n in names):
            raise HubError(f"--classifier hf:{path}: its labels {names} have no pos…/neg… label")
        return cls(path=path, model=model, tokenizer=AutoTokenizer.from_pretrained(path))

    def _probs(self, texts: list[str]) -> Any:
        import numpy as np
        import torch

        out = []
        for start in range(0, len(texts), 16):
            batch = self.tokenizer(list(texts[start : start + 16]), return_tensors="pt", padding=True, truncation=True)
            with torch.no_grad():
                out.append(self.model(**batch).logits.float().softmax(-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.num_labels))

    def _index(self, prefix: str) -> int:
        for i in range(self.model.config.num_labels):
            if str(self.model.config.id2label[i]).lower().startswith(prefix):
                return i
        raise HubError(f"no {prefix}… label")  # pragma: no cover - checked in load

    def positive_probability(self, texts: list[str]) -> Any:
        """``P(pos)`` per text, ``[len(texts)]``."""
        return self._probs(texts)[:, self._index("pos")]

    def positive_minus_negative(self, texts: list[str]) -> Any:
        """``P(pos) − P(neg)`` per text, ``[len(texts)]`` in [−1, 1]."""
        p = self._probs(texts)
        return p[:, self._index("pos")] - p[:, self._index("neg")]

    def describe(self) -> dict[str, Any]:
        """Manifest record: the folder and the labels."""
        return {"name": "hf", "path": self.path, "labels": [str(self.model.config.id2label[i]) for i in range(self.model.config.num_labels)]}


def load_classifier(spec: str, data: Path | None) -> SentimentClassifier | None:
    """Resolve ``--classifier``: ``char-ngram`` (default), ``char-ngram3`` (three labels),
    ``hf:PATH`` (a local transformers classifier, :class:`TransformersClassifier`), ``none``, or
    ``module:attribute``.

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
    if spec == "char-ngram3":
        if data is None:
            raise HubError("the char-ngram3 classifier trains on the sentiment data: pass --sentiment-data DIR, or --classifier none")
        return CharNgramClassifier.train(Path(data), labels=LABELS3)
    if spec.startswith("hf:"):
        return TransformersClassifier.load(spec[3:])
    if ":" not in spec:
        raise HubError(f"unknown --classifier {spec!r}; use char-ngram, char-ngram3, hf:PATH, none or module:attribute")
    module, attr = spec.split(":", 1)
    try:
        factory = getattr(import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise HubError(f"cannot load --classifier {spec!r}: {exc}") from exc
    classifier = factory(data)
    if not hasattr(classifier, "positive_probability"):
        raise HubError(f"--classifier {spec!r} returned {type(classifier).__name__}, which has no positive_probability(texts)")
    return classifier


def sentiment_difference(classifier: Any, texts: list[str]) -> Any:
    """``P(pos) − P(neg)`` per text from ``classifier``: its ``positive_minus_negative`` where it
    has one, else ``2 P(pos) − 1`` (a binary scorer). ``[len(texts)]`` floats in [−1, 1]."""
    import numpy as np

    if hasattr(classifier, "positive_minus_negative"):
        return classifier.positive_minus_negative(texts)
    return 2 * np.asarray(classifier.positive_probability(texts), dtype=float) - 1


def protocol_prompts(data: Path, language: str, n: int, sample_n: int = 1000) -> tuple[list[str], list[int], str]:
    """The A16 prompts of one language (paper-protocols.md A16; ``multilingual/intervention.py:
    144-162``): ``random.seed(0)``, ``random.sample(range(len(rows)), sample_n)`` over the
    training rows (all labels, file order), the first ``n`` of that sample (so a reduced run is a
    subset of the paper's 1,000), each prefixed with :data:`PROTOCOL_PREFIX`.

    The training split is ``train.csv``; the local Chinese data has none, so Chinese samples
    ``valid.csv`` (:func:`training_split`), and the row order of the local files need not be
    the Hugging Face dataset's, so the sampled rows are not the paper's rows.

    Returns:
        (prompts, the sampled row indices, the split file used).

    Raises:
        HubError: a language without a prefix (english), ``n`` < 1 or more than the sample,
            missing files.
    """
    import random

    if language not in PROTOCOL_PREFIX:
        raise HubError(f"--protocol wu2024 steers {' and '.join(PROTOCOL_PREFIX)} prompts, not {language!r}")
    split = training_split(data, language)
    frame = read_split(data, language, split, labels=None)
    sample_n = min(sample_n, frame.height)
    if not 1 <= n <= sample_n:
        raise HubError(f"--per-language {n}: choose 1..{sample_n} ({language} {split}.csv has {frame.height} rows)")
    rng_state = random.getstate()
    try:
        random.seed(0)
        indices = random.sample(range(frame.height), sample_n)[:n]
    finally:
        random.setstate(rng_state)
    texts = frame["text"].to_list()
    prompts = []
    for i in indices:
        prompts.append(PROTOCOL_PREFIX[language] + texts[i])
    return prompts, indices, f"{split}.csv"
