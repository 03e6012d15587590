"""Paper B's five trait pair sets in data/traits.jsonl (spec B §3) and the configs that use them."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from steerlimits import data as D
from steerlimits import scoring

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
KEYS = ["id", "trait", "context", "positive", "negative"]
NEW_TRAITS = ("politeness", "agreeableness", "truthfulness")

# Pole words (hand-written ground truth): the words that differ inside a pair must come from the right pole.
POLES: dict[str, tuple[set[str], set[str]]] = {
    "politeness": (
        {
            "polite",
            "respectful",
            "courteous",
            "courteously",
            "considerate",
            "well-mannered",
            "gracious",
            "tactfully",
            "kindly",
            "good",
            "friendly",
        },
        {
            "rude",
            "rudely",
            "disrespectful",
            "inconsiderate",
            "ill-mannered",
            "insulting",
            "snide",
            "tactlessly",
            "harshly",
            "bad",
            "condescending",
            "mocking",
        },
    ),
    "agreeableness": (
        {
            "agreeable",
            "cooperative",
            "warm",
            "accommodating",
            "helpfully",
            "supportively",
            "supportive",
            "easy-going",
            "willing",
            "friendly",
            "obliging",
            "help",
            "trusting",
            "generous",
            "patient",
            "kind",
        },
        {
            "disagreeable",
            "uncooperative",
            "cold",
            "obstructive",
            "unhelpfully",
            "grudgingly",
            "grudging",
            "stubborn",
            "unwilling",
            "hostile",
            "argumentative",
            "argue",
            "suspicious",
            "impatient",
            "harsh",
            "combative",
        },
    ),
    "truthfulness": (
        {
            "accurate",
            "accurately",
            "correct",
            "correctly",
            "true",
            "truthful",
            "truthfully",
            "reliable",
            "real",
            "genuine",
            "fact-checked",
        },
        {
            "inaccurate",
            "false",
            "incorrectly",
            "wrong",
            "misleading",
            "mistaken",
            "invented",
            "plausible",
            "plausible-sounding",
            "errors",
            "convincing",
            "convincingly",
            "believable",
        },
    ),
}


def _lines() -> list[str]:
    raw = (DATA / "traits.jsonl").read_bytes().decode("utf-8")  # strict: invalid UTF-8 raises
    return [line for line in raw.splitlines() if line.strip()]


def _rows() -> list[dict]:
    return [json.loads(line) for line in _lines()]


def _diff_words(a: str, b: str) -> tuple[list[str], list[str]]:
    """Words of ``a`` and of ``b`` outside the blocks the two word sequences share (lower-case, no punctuation)."""
    wa, wb = a.split(), b.split()
    only_a: list[str] = []
    only_b: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if tag != "equal":
            only_a += [re.sub(r"[^\w-]", "", w.lower()) for w in wa[i1:i2]]
            only_b += [re.sub(r"[^\w-]", "", w.lower()) for w in wb[j1:j2]]
    return only_a, only_b


def test_five_traits_with_enough_records() -> None:
    counts = Counter(r["trait"] for r in _rows())
    assert set(counts) == set(D.TRAITS) == {"sentiment", "formality", "politeness", "agreeableness", "truthfulness"}
    assert all(counts[t] >= 30 for t in D.TRAITS), counts  # the paper had >= 21 politeness pairs; we wrote 30
    assert counts["politeness"] == counts["agreeableness"] == counts["truthfulness"] == 30


def test_records_are_well_formed() -> None:
    rows = _rows()
    for line, r in zip(_lines(), rows, strict=True):
        assert list(r) == KEYS, r  # same key order as the rest of the file
        assert json.loads(line) == r and "\n" not in line
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    for trait in D.TRAITS:
        mine = [r["id"] for r in rows if r["trait"] == trait]
        assert mine == [f"{trait}-{k:03d}" for k in range(len(mine))], trait  # consecutive, in file order
    # each trait's records form one contiguous block
    order = [r["trait"] for r in rows]
    assert [t for k, t in enumerate(order) if k == 0 or order[k - 1] != t] == list(dict.fromkeys(order))


def test_pairs_are_clean_contrasts() -> None:
    rows = _rows()
    texts = [r[k] for r in rows for k in ("positive", "negative")]
    assert not [t for t, n in Counter(texts).items() if n > 1]
    for trait in D.TRAITS:
        contexts = [r["context"] for r in rows if r["trait"] == trait]
        assert len(contexts) == len(set(contexts)), trait
    for r in rows:
        assert r["positive"] != r["negative"], r
        assert r["context"] in r["positive"] and r["context"] in r["negative"], r
        # only the pole words differ: the instruction templates (context replaced by a placeholder) differ in a
        # few words, and the placeholder sits in a block both templates share
        only_pos, only_neg = _diff_words(*(r[k].replace(r["context"], "CONTEXT") for k in ("positive", "negative")))
        assert 1 <= len(only_pos) <= 5 and 1 <= len(only_neg) <= 5, r
        assert "context" not in only_pos + only_neg, r


@pytest.mark.parametrize("trait", NEW_TRAITS)
def test_new_traits_differ_in_the_right_pole(trait: str) -> None:
    pos_words, neg_words = POLES[trait]
    for r in (r for r in _rows() if r["trait"] == trait):
        only_pos, only_neg = _diff_words(r["positive"], r["negative"])
        assert set(only_pos) & pos_words and not set(only_pos) & neg_words, r
        assert set(only_neg) & neg_words and not set(only_neg) & pos_words, r


@pytest.mark.parametrize("trait", D.TRAITS)
def test_contrast_pairs_per_trait(trait: str) -> None:
    rows = [r for r in _rows() if r["trait"] == trait]
    pairs = D.contrast_pairs(trait, DATA)
    assert len(pairs) == len(rows) == (50 if trait in ("sentiment", "formality") else 30)
    assert [(p.positive.user, p.negative.user) for p in pairs] == [(r["positive"], r["negative"]) for r in rows]
    assert all(p.positive.system is None and p.negative.system is None for p in pairs)
    assert [p.user for p in D.test_prompts(trait, DATA)] == D.neutral_stems(DATA)


def test_contrast_pairs_on_planted_file(tmp_path: Path) -> None:
    planted = {"politeness": 3, "agreeableness": 1, "truthfulness": 4, "sentiment": 2}
    with open(tmp_path / "traits.jsonl", "w", encoding="utf-8") as f:
        for trait, n in planted.items():
            for k in range(n):
                f.write(
                    json.dumps(
                        {
                            "id": f"{trait}-{k:03d}",
                            "trait": trait,
                            "context": f"c{k}",
                            "positive": f"P {trait} c{k}",
                            "negative": f"N {trait} c{k}",
                        }
                    )
                    + "\n"
                )
    for trait, n in planted.items():
        pairs = D.contrast_pairs(trait, tmp_path)
        assert [(p.positive.user, p.negative.user) for p in pairs] == [
            (f"P {trait} c{k}", f"N {trait} c{k}") for k in range(n)
        ]
    assert D.contrast_pairs("formality", tmp_path) == []
    with pytest.raises(ValueError, match="truthfulness"):
        D.contrast_pairs("honesty", tmp_path)


def _config(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def test_paper_config_runs_all_five_traits_with_hub_zero_shot_scorers() -> None:
    cfg = _config("paper.yaml")
    pb = dict(cfg["paperB"])
    validate(pb, str(ROOT / "workflow/schemas/paperB.schema.yaml"))
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))
    assert set(pb["traits"]) == set(D.TRAITS)
    assert set(pb["traits"]) <= set(cfg["vectors"]["behaviours"])
    scorers = cfg["steering"]["dose_response"]["scorer"]
    for trait in pb["traits"]:
        assert cfg["vectors"]["format"][trait] == "raw"  # paper B: raw stems
        name = scorers[trait]
        assert name in scoring.SCORERS and name in scoring.HUB_SPECS, (trait, name)
        assert scoring.HUB_SPECS[name].trait == trait
    for trait in NEW_TRAITS:
        spec = scoring.HUB_SPECS[scorers[trait]]
        assert spec.hub_id == "facebook/bart-large-mnli" and spec.mode == "zero_shot"


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml"])
def test_offline_configs_keep_offline_scored_traits(name: str) -> None:
    cfg = _config(name)
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))  # fills the default scorer map
    assert cfg["paperB"]["traits"] == ["sentiment", "formality"]
    scorers = cfg["steering"]["dose_response"]["scorer"]
    assert all(not str(scorers[t]).startswith("hf:") for t in cfg["paperB"]["traits"])
