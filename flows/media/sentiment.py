"""Sentiment scorers of the media flow: the shipped lexicon, or a trained scikit-learn model.

Both give ``(label, score)`` with ``label`` in ``negative``/``neutral``/``positive`` and
``score`` in ``[-1, 1]`` (below 0 is negative). :func:`train` fits a model from a labelled
CSV or JSON-lines file (``vigil train sentiment``): TF-IDF of words (1-2 grams) and of
character 2-5 grams within words, then a logistic regression. It reports accuracy on a
held-out, stratified split, beside the lexicon's on the same split.

Models are saved with ``joblib`` (pickle): load only model files you made yourself.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vigil.flows.media.text import LexiconSentiment, has_diacritics, tokens

LABELS = ("negative", "neutral", "positive")
_LABEL_COLUMNS = ("label", "sentiment", "airline_sentiment", "polarity")
_TEXT_COLUMNS = ("text", "content", "body", "title")
_ALIASES = {"neg": "negative", "pos": "positive", "neu": "neutral", "-1": "negative",
            "0": "neutral", "1": "positive", "tiêu cực": "negative", "tích cực": "positive",
            "trung tính": "neutral"}  # fmt: skip


class SentimentScorer(Protocol):
    def score(self, text: str, lang: str) -> tuple[str, float]: ...


class LexiconScorer:
    """The shipped lexicon (see :class:`vigil.flows.media.text.LexiconSentiment`).

    >>> LexiconScorer().score("Chuyến bay bị huỷ, rất thất vọng", "vi")[0]
    'negative'
    """

    def __init__(self, negative_below: float = -0.2, positive_above: float = 0.2) -> None:
        self.negative_below = negative_below
        self.positive_above = positive_above
        self._lex = LexiconSentiment(negative_below, positive_above)

    def score(self, text: str, lang: str) -> tuple[str, float]:
        return self.score_tokens(tokens(text), lang, lang != "vi" or has_diacritics(text))

    def score_tokens(
        self, exact: Sequence[str], lang: str, accented: bool = True
    ) -> tuple[str, float]:
        """:meth:`score` of a text already tokenised (:func:`~vigil.flows.media.text.tokens`);
        ``accented``: whether a Vietnamese text carries diacritics."""
        s = self._lex.score_tokens(exact, lang, accented)
        return self._lex.label_of(s), s


class ModelScorer:
    """A pipeline trained by :func:`train`; score = P(positive) - P(negative)."""

    def __init__(self, path: str | Path) -> None:
        import joblib  # type: ignore[import-untyped]

        self.path = str(path)
        self._model = joblib.load(path)
        self._classes = [str(c) for c in self._model.classes_]

    def score(self, text: str, lang: str) -> tuple[str, float]:
        p = self._model.predict_proba([text])[0]
        probs = dict(zip(self._classes, p, strict=True))
        label = self._classes[int(p.argmax())]
        return label, float(probs.get("positive", 0.0) - probs.get("negative", 0.0))

    def score_many(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """Batch scoring (one vectorisation for many texts: much faster)."""
        if not texts:
            return []
        ps = self._model.predict_proba(list(texts))
        ineg = self._classes.index("negative") if "negative" in self._classes else None
        ipos = self._classes.index("positive") if "positive" in self._classes else None
        out = []
        for p in ps:
            s = (p[ipos] if ipos is not None else 0.0) - (p[ineg] if ineg is not None else 0.0)
            out.append((self._classes[int(p.argmax())], float(s)))
        return out


def make_scorer(kind: str, model_path: str | None, neg: float, pos: float) -> SentimentScorer:
    """The scorer a configuration names."""
    if kind == "model":
        if not model_path:
            msg = "sentiment model_path is required for kind 'model'"
            raise ValueError(msg)
        return ModelScorer(model_path)
    return LexiconScorer(neg, pos)


# ---------------------------------------------------------------------------- training
def read_labelled(
    path: str | Path, text_column: str | None = None, label_column: str | None = None
) -> tuple[list[str], list[str]]:
    """Texts and labels from a CSV or JSON-lines file (columns found by common names)."""
    p = Path(path)
    with open(p, encoding="utf-8", newline="") as f:
        if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            rows = [json.loads(line) for line in f if line.strip()]
        else:
            rows = list(csv.DictReader(f))
    if not rows:
        msg = f"{p}: no rows"
        raise ValueError(msg)
    cols = list(rows[0])
    tc = text_column or next((c for c in _TEXT_COLUMNS if c in cols), None)
    lc = label_column or next((c for c in _LABEL_COLUMNS if c in cols), None)
    if tc is None or lc is None:
        msg = f"{p}: cannot find text/label columns in {cols}; pass --text-column/--label-column"
        raise ValueError(msg)
    texts, labels = [], []
    seen: set[str] = set()
    for r in rows:
        lab = str(r.get(lc, "")).strip().lower()
        lab = _ALIASES.get(lab, lab)
        t = str(r.get(tc) or "")
        if lab in LABELS and t and t not in seen:  # a repeated text would leak into the test
            seen.add(t)
            texts.append(t)
            labels.append(lab)
    return texts, labels


@dataclass(frozen=True, slots=True)
class TrainReport:
    """Held-out evaluation of a trained model, beside the lexicon on the same rows."""

    rows: int
    train_rows: int
    test_rows: int
    accuracy: float
    macro_f1: float
    lexicon_accuracy: float
    majority_accuracy: float
    per_class_f1: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "train_rows": self.train_rows,
            "test_rows": self.test_rows,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "lexicon_accuracy": round(self.lexicon_accuracy, 4),
            "majority_accuracy": round(self.majority_accuracy, 4),
            "per_class_f1": {k: round(v, 4) for k, v in self.per_class_f1.items()},
        }


def build_pipeline(seed: int = 0) -> Any:
    """TF-IDF (words 1-2, characters 2-5 in words) + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from sklearn.pipeline import FeatureUnion, Pipeline  # type: ignore[import-untyped]

    feats = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True
                ),
            ),
        ]
    )
    clf = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced", random_state=seed)
    return Pipeline([("features", feats), ("clf", clf)])


def train(
    data: str | Path,
    out: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    language: str = "en",
) -> TrainReport:
    """Fit on a stratified ``1 - test_size`` share, report on the rest, save the model
    refitted on everything to ``out``."""
    import joblib
    from sklearn.metrics import accuracy_score, f1_score  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    texts, labels = read_labelled(data, text_column, label_column)
    x_tr, x_te, y_tr, y_te = train_test_split(
        texts, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    model = build_pipeline(seed).fit(x_tr, y_tr)
    pred = model.predict(x_te)
    lex = LexiconScorer()
    lex_pred = [lex.score(t, language)[0] for t in x_te]
    majority = max(set(y_tr), key=y_tr.count)
    per_class = f1_score(y_te, pred, labels=list(LABELS), average=None, zero_division=0)
    report = TrainReport(
        rows=len(texts),
        train_rows=len(x_tr),
        test_rows=len(x_te),
        accuracy=float(accuracy_score(y_te, pred)),
        macro_f1=float(f1_score(y_te, pred, average="macro")),
        lexicon_accuracy=float(accuracy_score(y_te, lex_pred)),
        majority_accuracy=sum(y == majority for y in y_te) / len(y_te),
        per_class_f1={lab: float(f) for lab, f in zip(LABELS, per_class, strict=True)},
    )
    final = build_pipeline(seed).fit(texts, labels)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(final, out)
    return report
