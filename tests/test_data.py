"""Tests for the project-written data files and the loaders in steerlimits.data."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import datasets
import pytest

from steerlimits import data as D

DATA = Path(__file__).resolve().parents[1] / "data"


def _read(name: str, data_dir: Path = DATA) -> list[dict]:
    with open(data_dir / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _texts(row: dict) -> list[str]:
    return [row[k] for k in ("text", "positive", "negative", "formal", "informal") if k in row]


def _words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------- file-level checks


@pytest.mark.parametrize("name", list(D.DATA_FILES))
def test_schema_ids_and_texts(name: str) -> None:
    rows = _read(name)
    assert rows, name
    for r in rows:
        assert set(r) == set(D.DATA_FILES[name]), (name, r)
        for v in r.values():
            assert isinstance(v, str) and v and v == v.strip(), (name, r)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate ids in {name}"
    texts = [t for r in rows for t in _texts(r)]
    dups = [t for t, n in Counter(texts).items() if n > 1]
    assert not dups, f"duplicate texts in {name}: {dups}"


def test_refusal_counts_splits_and_length() -> None:
    rows = _read("refusal")
    counts = Counter((r["label"], r["split"]) for r in rows)
    assert set(counts) == {(lab, sp) for lab in ("harmful", "harmless") for sp in ("train", "test")}
    assert counts[("harmful", "train")] >= 64 and counts[("harmless", "train")] >= 64
    assert counts[("harmful", "test")] == 10 and counts[("harmless", "test")] == 10
    for r in rows:
        assert 10 <= _words(r["text"]) <= 30, r


def test_held_out_texts_are_held_out() -> None:
    refusal = _read("refusal")
    train = {r["text"].lower() for r in refusal if r["split"] == "train"}
    test = {r["text"].lower() for r in refusal if r["split"] == "test"}
    assert not train & test
    paraphrases = {r["text"].lower() for r in _read("refusal_paraphrases")}
    assert not paraphrases & (train | test)
    questions = _read("persona_questions")
    q_train = {r["text"].lower() for r in questions if r["split"] == "train"}
    q_test = {r["text"].lower() for r in questions if r["split"] == "test"}
    assert not q_train & q_test


def test_paraphrases_point_at_harmful_test_requests() -> None:
    harmful_test = {r["id"] for r in _read("refusal") if r["label"] == "harmful" and r["split"] == "test"}
    rows = _read("refusal_paraphrases")
    assert len(rows) == 50
    per_id = Counter(r["test_id"] for r in rows)
    assert set(per_id) == harmful_test
    assert set(per_id.values()) == {5}
    for r in rows:
        assert 10 <= _words(r["text"]) <= 30, r


def test_persona_files() -> None:
    prompts = _read("persona_system_prompts")
    labels = Counter(r["label"] for r in prompts)
    assert set(labels) == {"evil", "helpful"} and labels["evil"] >= 5 and labels["helpful"] >= 5
    for r in prompts:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", r["text"]) if s]
        assert 1 <= len(sentences) <= 3, r
    splits = Counter(r["split"] for r in _read("persona_questions"))
    assert set(splits) == {"train", "test"} and splits["train"] >= 40 and splits["test"] == 10


def test_traits_are_minimal_pairs_over_distinct_contexts() -> None:
    rows = _read("traits")
    by_trait = Counter(r["trait"] for r in rows)
    assert set(by_trait) == set(D.TRAITS) == {"sentiment", "formality", "politeness", "agreeableness", "truthfulness"}
    assert by_trait["sentiment"] >= 48 and by_trait["formality"] >= 48
    assert all(by_trait[t] >= 30 for t in ("politeness", "agreeableness", "truthfulness")), by_trait
    for trait in by_trait:
        contexts = [r["context"] for r in rows if r["trait"] == trait]
        assert len(contexts) == len(set(contexts)), trait
    for r in rows:
        assert r["positive"] != r["negative"]
        # same context in both instructions, and little else differs
        assert r["context"].lower() in r["positive"].lower() and r["context"].lower() in r["negative"].lower()
        shared = set(r["positive"].lower().split()) & set(r["negative"].lower().split())
        assert len(shared) >= len(r["context"].split()) + 1, r


def test_stems_and_environments() -> None:
    stems = _read("neutral_stems")
    assert len(stems) >= 40
    assert all(6 <= _words(r["text"]) <= 20 for r in stems)
    envs = Counter(r["environment"] for r in _read("environments"))
    assert set(envs) == {"in_distribution", "topic_shift", "genre_shift"}
    assert all(n >= 12 for n in envs.values())


@pytest.mark.parametrize(
    ("name", "labels", "minimum"),
    [
        ("sentiment_validation", {"positive", "negative"}, 40),
        ("refusal_responses", {"refusal", "compliance"}, 30),
        ("offensive_validation", {"offensive", "benign"}, 25),
    ],
)
def test_labelled_file_balance(name: str, labels: set[str], minimum: int) -> None:
    counts = Counter(r["label"] for r in _read(name))
    assert set(counts) == labels
    assert all(n >= minimum for n in counts.values()), counts


def test_formality_pairs_differ() -> None:
    rows = _read("formality_validation")
    assert len(rows) >= 40
    assert all(r["formal"] != r["informal"] for r in rows)


def test_compliance_set_contains_refusal_keywords() -> None:
    # the compliance side must defeat a naive "sorry"/"cannot" keyword scorer
    compliance = [r["text"].lower() for r in _read("refusal_responses") if r["label"] == "compliance"]
    assert any("sorry" in t for t in compliance)
    assert any("cannot" in t for t in compliance)
    refusals = [r["text"].lower() for r in _read("refusal_responses") if r["label"] == "refusal"]
    assert any(not re.search(r"sorry|can't|cannot|apolog", t) for t in refusals)


# ---------------------------------------------------------------- loaders on the shipped data


def test_load_records_returns_dataset() -> None:
    ds = D.load_records("refusal", DATA)
    assert isinstance(ds, datasets.Dataset)
    assert len(ds) == len(_read("refusal"))
    assert set(D.DATA_FILES["refusal"]) <= set(ds.column_names)


@pytest.mark.parametrize("behaviour", D.BEHAVIOURS)
def test_contrast_pairs_shapes(behaviour: str) -> None:
    pairs = D.contrast_pairs(behaviour, DATA)
    assert len(pairs) >= (30 if behaviour in ("politeness", "agreeableness", "truthfulness") else 40)
    for p in pairs:
        assert isinstance(p, D.PromptPair)
        assert p.positive.user and p.negative.user and p.positive != p.negative
    held_out = {q.user for q in D.test_prompts(behaviour, DATA)}
    used = {p.positive.user for p in pairs} | {p.negative.user for p in pairs}
    assert not held_out & used


def test_refusal_pairs_match_files() -> None:
    rows = _read("refusal")
    harmful = [r["text"] for r in rows if r["label"] == "harmful" and r["split"] == "train"]
    harmless = [r["text"] for r in rows if r["label"] == "harmless" and r["split"] == "train"]
    pairs = D.contrast_pairs("refusal", DATA)
    assert len(pairs) == min(len(harmful), len(harmless))
    assert [p.positive.user for p in pairs] == harmful[: len(pairs)]
    assert [p.negative.user for p in pairs] == harmless[: len(pairs)]
    assert all(p.positive.system is None and p.negative.system is None for p in pairs)


def test_persona_pairs_share_question_and_split_systems() -> None:
    prompts = _read("persona_system_prompts")
    evil = {r["text"] for r in prompts if r["label"] == "evil"}
    helpful = {r["text"] for r in prompts if r["label"] == "helpful"}
    pairs = D.contrast_pairs("persona_evil", DATA)
    train_q = [r["text"] for r in _read("persona_questions") if r["split"] == "train"]
    assert [p.positive.user for p in pairs] == train_q
    for p in pairs:
        assert p.positive.user == p.negative.user
        assert p.positive.system in evil and p.negative.system in helpful
    assert {p.positive.system for p in pairs} == evil  # every evil prompt is used


def test_trait_pairs_point_to_positive_side() -> None:
    rows = _read("traits")
    for trait in D.TRAITS:
        pairs = D.contrast_pairs(trait, DATA)
        expected = [(r["positive"], r["negative"]) for r in rows if r["trait"] == trait]
        assert [(p.positive.user, p.negative.user) for p in pairs] == expected
    formal = D.contrast_pairs("formality", DATA)
    assert sum("formal" in p.positive.user.lower() for p in formal) > len(formal) // 2


def test_test_prompts() -> None:
    refusal = D.test_prompts("refusal", DATA)
    expected = [r["text"] for r in _read("refusal") if r["label"] == "harmful" and r["split"] == "test"]
    assert [p.user for p in refusal] == expected and len(refusal) == 10
    persona = D.test_prompts("persona_evil", DATA)
    assert len(persona) == 10 and all(p.system is None for p in persona)
    stems = D.neutral_stems(DATA)
    for trait in D.TRAITS:
        assert [p.user for p in D.test_prompts(trait, DATA)] == stems


def test_environments_and_paraphrase_loaders() -> None:
    envs = D.environments(DATA)
    rows = _read("environments")
    assert {k: len(v) for k, v in envs.items()} == dict(Counter(r["environment"] for r in rows))
    para = D.refusal_paraphrases(DATA)
    harmful_test = {r["id"] for r in _read("refusal") if r["label"] == "harmful" and r["split"] == "test"}
    assert set(para) == harmful_test
    assert all(len(v) == 5 for v in para.values())


def test_labelled_texts() -> None:
    texts, labels = D.labelled_texts("formality_validation", DATA)
    rows = _read("formality_validation")
    assert len(texts) == len(labels) == 2 * len(rows)
    assert texts[0] == rows[0]["formal"] and texts[1] == rows[0]["informal"]
    assert labels[:4] == ["formal", "informal", "formal", "informal"]
    for name in ("sentiment_validation", "refusal_responses", "offensive_validation"):
        texts, labels = D.labelled_texts(name, DATA)
        assert (texts, labels) == ([r["text"] for r in _read(name)], [r["label"] for r in _read(name)])


def test_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="persona_evil"):
        D.contrast_pairs("evil", DATA)
    with pytest.raises(ValueError, match="refusal"):
        D.test_prompts("humour", DATA)
    with pytest.raises(ValueError, match="traits"):
        D.load_records("advbench", DATA)
    with pytest.raises(ValueError, match="sentiment_validation"):
        D.labelled_texts("refusal", DATA)


# ---------------------------------------------------------------- loaders on planted data


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def test_planted_data_dir_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(
        tmp_path,
        "persona_system_prompts",
        [{"id": f"e{i}", "label": "evil", "text": f"E{i}"} for i in range(2)]
        + [{"id": f"h{i}", "label": "helpful", "text": f"H{i}"} for i in range(3)],
    )
    _write(
        tmp_path,
        "persona_questions",
        [{"id": f"q{i}", "split": "train", "text": f"Q{i}"} for i in range(5)]
        + [{"id": "t0", "split": "test", "text": "T0"}],
    )
    _write(
        tmp_path,
        "refusal",
        [{"id": f"a{i}", "label": "harmful", "split": "train", "text": f"A{i}"} for i in range(3)]
        + [{"id": f"b{i}", "label": "harmless", "split": "train", "text": f"B{i}"} for i in range(2)]
        + [{"id": "c0", "label": "harmful", "split": "test", "text": "C0"}],
    )
    monkeypatch.setenv("STEERLIMITS_DATA_DIR", str(tmp_path))
    pairs = D.contrast_pairs("persona_evil")
    got = [(p.positive.system, p.positive.user, p.negative.system, p.negative.user) for p in pairs]
    assert got == [
        ("E0", "Q0", "H0", "Q0"),
        ("E1", "Q1", "H1", "Q1"),
        ("E0", "Q2", "H2", "Q2"),
        ("E1", "Q3", "H0", "Q3"),
        ("E0", "Q4", "H1", "Q4"),
    ]
    assert D.test_prompts("persona_evil") == [D.Prompt("T0")]
    refusal = D.contrast_pairs("refusal")
    assert refusal == [D.PromptPair(D.Prompt(f"A{i}"), D.Prompt(f"B{i}")) for i in range(2)]
    assert D.test_prompts("refusal") == [D.Prompt("C0")]
    # an explicit argument wins over the environment variable
    assert len(D.contrast_pairs("refusal", DATA)) >= 64


def test_missing_column_and_missing_dir(tmp_path: Path) -> None:
    _write(tmp_path, "neutral_stems", [{"id": "s0", "txt": "oops"}])
    with pytest.raises(ValueError, match="text"):
        D.neutral_stems(tmp_path)
    with pytest.raises(FileNotFoundError):
        D.neutral_stems(tmp_path / "nope")
