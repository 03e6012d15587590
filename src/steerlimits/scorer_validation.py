"""Scorer validation (D9): accuracy of every offline scorer on held-out data never used to train it.

The rows of :func:`validate` are the foundation's ``validation.csv`` (scorer, test set, n, accuracy, majority
baseline, rate of exact-zero scores, and the held-out ROC AUC of the score where the test set has two classes:
threshold-free, so a scorer that ranks texts well but abstains often, such as the signed arg-max with its
"neutral" zeros, is told apart from one that ranks badly).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerlimits import corpora
from steerlimits.provenance import REPO_ROOT
from steerlimits.scoring import SCORERS, embed, load_head, load_scorer
from steerlimits.stats import auc as _auc

__all__ = ["validate"]

log = logging.getLogger(__name__)


def _read_jsonl(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        log.warning("validation file %s is missing; its rows get n=0, accuracy NaN", path)
        return None
    return pd.read_json(path, lines=True, dtype=False)


_COLUMNS = ["scorer", "test_set", "n", "accuracy", "baseline", "zero_rate", "auc"]


def _row(
    scorer: str,
    test_set: str,
    correct: np.ndarray | None,
    baseline: float = float("nan"),
    scores: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    zero_rate: bool = True,
) -> dict[str, Any]:
    """One row; ``truth`` (1 = positive class) with ``scores`` adds the AUC; ``zero_rate=False`` leaves the
    zero rate out (scores that are 0 by design, e.g. binary matchers, are not abstentions)."""
    nan = float("nan")
    if correct is None or len(correct) == 0:
        return dict(zip(_COLUMNS, [scorer, test_set, 0, nan, baseline, nan, nan], strict=True))
    zero = float(np.mean(np.asarray(scores) == 0.0)) if scores is not None and zero_rate else nan
    area = _auc(scores, truth) if scores is not None and truth is not None else nan
    return dict(
        zip(_COLUMNS, [scorer, test_set, int(len(correct)), float(np.mean(correct)), baseline, zero, area], strict=True)
    )


def _majority(labels: pd.Series) -> float:
    return float(labels.value_counts(normalize=True).iloc[0])


def validate(heads_dir: Path, *, n_test: int, seed: int, data_dir: Path | None = None) -> pd.DataFrame:
    """Accuracy of every offline scorer on data never used in training.

    Sign accuracy (sentiment, vader, textblob, formality): a score of exactly 0 counts as wrong; the
    sentiment ``*_forced`` rows decide positive iff P(positive) > P(negative), ignoring the neutral class
    (comparable with a binary classifier). ``zero_rate`` is the share of scores exactly 0 in sign rows
    (neutral argmax for ``sentiment``, no lexicon hit for ``vader``/``textblob``).
    ``baseline`` is the majority-class rate (0.5 for pairs). Tweets and formal sentences come from the
    held-out partition (:data:`steerlimits.corpora.HELDOUT_RULE`); ``data_dir`` (default ``<repo>/data``)
    holds the project's hand-written JSONL sets. ``sentiment_prob`` rows score the sentiment head's continuous
    P(positive) − P(negative) (its accuracy is the ``_forced`` decision). Returns columns scorer, test_set, n,
    accuracy, baseline, zero_rate, auc (NaN for the 3-class and the paired rows).
    """
    data_dir = Path(data_dir) if data_dir is not None else REPO_ROOT / "data"
    rng = np.random.default_rng(seed)
    held = corpora.tweet_split("heldout")
    t3 = held.iloc[rng.permutation(len(held))[:n_test]]
    pn_pool = held[held["label"] != "neutral"]
    pn = pn_pool.iloc[rng.permutation(len(pn_pool))[:n_test]]
    rows: list[dict[str, Any]] = []

    sent = load_head(SCORERS["sentiment"], heads_dir)
    p3 = sent.estimator.predict_proba(embed(t3["text"].tolist(), cache=True))
    pred = np.asarray(sent.classes)[p3.argmax(axis=1)]
    rows.append(_row("sentiment", "tweets_heldout_3class", pred == t3["label"].to_numpy(), _majority(t3["label"])))
    proj = _read_jsonl(data_dir / "sentiment_validation.jsonl")
    if proj is not None:
        proj = proj[proj["label"].str.lower().isin(["positive", "negative"])]
    sign_sets = {"tweets_heldout_posneg": pn, "pang_lee": corpora.pang_lee(), "project_sentiment_validation": proj}
    for name in ("sentiment", "sentiment_prob", "vader", "textblob"):
        scorer = None if name.startswith("sentiment") else load_scorer(name)
        for set_name, df in sign_sets.items():
            if df is None:
                rows.append(_row(name, set_name, None))
                continue
            texts, labels = df["text"].tolist(), df["label"].str.lower()
            truth = np.where(labels.to_numpy() == "positive", 1.0, -1.0)
            if name == "sentiment":  # sign of the score (neutral = 0 = wrong), and forced P(pos) vs P(neg)
                p = sent.estimator.predict_proba(embed(texts, cache=True))
                s = sent.from_proba(p)
                forced = p[:, sent.classes.index("positive")] > p[:, sent.classes.index("negative")]
                rows.append(_row(name, set_name + "_forced", np.where(forced, 1.0, -1.0) == truth, _majority(labels)))
            elif name == "sentiment_prob":  # the continuous score of the same head
                p = sent.estimator.predict_proba(embed(texts, cache=True))
                s = p[:, sent.classes.index("positive")] - p[:, sent.classes.index("negative")]
            else:
                assert scorer is not None
                s = scorer.score(texts)
            rows.append(_row(name, set_name, np.sign(s) == truth, _majority(labels), s, truth == 1.0))

    form = load_head(SCORERS["formality"], heads_dir)
    n_inf = n_test // 2
    inf = t3["text"].tolist()[:n_inf]
    fml = corpora.formal_split("heldout", seed)[: n_test - n_inf]
    s = form.score(inf + fml)
    truth = np.r_[-np.ones(len(inf)), np.ones(len(fml))]
    rows.append(
        _row(
            "formality",
            "tweets_vs_formal_heldout",
            np.sign(s) == truth,
            max(len(inf), len(fml)) / max(len(s), 1),
            s,
            truth == 1.0,
        )
    )
    pairs = _read_jsonl(data_dir / "formality_validation.jsonl")
    if pairs is None:
        rows += [
            _row("formality", "project_formality_pairs", None),
            _row("formality", "project_formality_sentences", None),
        ]
    else:
        sf, si = form.score(pairs["formal"].tolist()), form.score(pairs["informal"].tolist())
        rows.append(_row("formality", "project_formality_pairs", sf > si, 0.5))
        rows.append(
            _row(
                "formality",
                "project_formality_sentences",
                np.r_[sf > 0, si < 0],
                0.5,
                np.r_[sf, si],
                np.r_[np.ones(len(sf)), np.zeros(len(si))],
            )
        )

    for name, fname, set_name, pos, thr in (
        ("refusal", "refusal_responses.jsonl", "project_refusal_responses", "refusal", 0.5),
        ("offensiveness", "offensive_validation.jsonl", "project_offensive_validation", "offensive", 0.5),
    ):
        df = _read_jsonl(data_dir / fname)
        if df is None:
            rows.append(_row(name, set_name, None))
            continue
        labels = df["label"].str.lower()
        s = load_scorer(name).score(df["text"].tolist())
        rows.append(
            _row(
                name,
                set_name,
                (s > thr) == (labels == pos).to_numpy(),
                _majority(labels),
                s,
                (labels == pos).to_numpy(),
                zero_rate=False,
            )
        )
    return pd.DataFrame(rows, columns=_COLUMNS)
