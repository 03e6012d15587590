"""Loaders for the project-written prompt data sets in ``<repo>/data`` (spec D10).

Every file is JSONL (one object per line) and is read with ``datasets.load_dataset("json", ...)``.
The data folder is resolved in this order: the ``data_dir`` argument, the environment variable
``STEERLIMITS_DATA_DIR``, then ``src/steerlimits/../../data`` relative to this module. See ``data/README.md``
for the schema and intended use of every file.

Contrast pairs follow one convention: ``PromptPair.positive`` is the side the steering vector points *to*
(harmful, evil, positive sentiment, formal, polite, agreeable, accurate) and ``PromptPair.negative`` the side it
points away from, so a difference-of-means vector is ``mean(act(positive)) - mean(act(negative))``. Prompts are
returned as plain (system, user) text; the caller applies a chat template or a raw-text frame.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets

__all__ = [
    "BEHAVIOURS",
    "DATA_FILES",
    "LABELLED_FILES",
    "Prompt",
    "PromptPair",
    "TRAITS",
    "contrast_pairs",
    "data_dir_path",
    "environments",
    "labelled_texts",
    "load_records",
    "neutral_stems",
    "refusal_paraphrases",
    "test_prompts",
]

logger = logging.getLogger(__name__)

# paper B's five traits (docs/paperB.md) are the records of traits.jsonl; politeness, agreeableness and truthfulness are
# scored only by the hub zero-shot classifier, so the offline default config uses sentiment and formality
TRAITS: tuple[str, ...] = ("sentiment", "formality", "politeness", "agreeableness", "truthfulness")
BEHAVIOURS: tuple[str, ...] = ("refusal", "persona_evil", *TRAITS)

# file stem -> columns every record must have
DATA_FILES: dict[str, tuple[str, ...]] = {
    "refusal": ("id", "label", "split", "text"),
    "refusal_paraphrases": ("id", "test_id", "text"),
    "persona_system_prompts": ("id", "label", "text"),
    "persona_questions": ("id", "split", "text"),
    "traits": ("id", "trait", "context", "positive", "negative"),
    "neutral_stems": ("id", "text"),
    "environments": ("id", "environment", "text"),
    "formality_validation": ("id", "topic", "formal", "informal"),
    "sentiment_validation": ("id", "text", "label"),
    "refusal_responses": ("id", "label", "text"),
    "offensive_validation": ("id", "label", "text"),
}

LABELLED_FILES: tuple[str, ...] = (
    "formality_validation",
    "sentiment_validation",
    "refusal_responses",
    "offensive_validation",
)

ENV_VAR = "STEERLIMITS_DATA_DIR"


@dataclass(frozen=True)
class Prompt:
    """One chat-style prompt; the caller formats it (chat template or raw text).

    Attributes
    ----------
    user : str
        The user turn (or the raw text for base models).
    system : str | None
        Optional system prompt; ``None`` means no system turn.
    """

    user: str
    system: str | None = None


@dataclass(frozen=True)
class PromptPair:
    """A contrastive pair over the same content.

    Attributes
    ----------
    positive : Prompt
        The side the vector points to (harmful / evil / positive sentiment / formal / polite / agreeable /
        accurate).
    negative : Prompt
        The opposite side (harmless / helpful / negative sentiment / informal / rude / disagreeable /
        plausible but inaccurate).
    """

    positive: Prompt
    negative: Prompt


def _check_name(name: str, valid: tuple[str, ...] | list[str], what: str) -> None:
    if name not in valid:
        raise ValueError(f"unknown {what} {name!r}; valid names: {', '.join(valid)}")


def data_dir_path(data_dir: str | Path | None = None) -> Path:
    """Resolve the data folder.

    Parameters
    ----------
    data_dir : str | Path | None
        Explicit folder (a relative path is relative to the repository, as ``data_dir`` in the config); if
        ``None``, ``$STEERLIMITS_DATA_DIR`` or ``<repo>/data`` is used.

    Returns
    -------
    Path
        An existing directory.

    Raises
    ------
    FileNotFoundError
        If the resolved folder does not exist.
    """
    if data_dir is None:
        env = os.environ.get(ENV_VAR)
        path = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    else:
        path = Path(data_dir)
        path = path if path.is_absolute() else Path(__file__).resolve().parents[2] / path
    if not path.is_dir():
        raise FileNotFoundError(f"data folder not found: {path} (set data_dir or ${ENV_VAR})")
    return path


def load_records(name: str, data_dir: str | Path | None = None) -> datasets.Dataset:
    """Load one JSONL data file as a ``datasets.Dataset``.

    Parameters
    ----------
    name : str
        File stem, one of ``DATA_FILES`` (e.g. ``"refusal"``, ``"traits"``).
    data_dir : str | Path | None
        Data folder override (see :func:`data_dir_path`).

    Returns
    -------
    datasets.Dataset
        One row per JSONL line, in file order.

    Raises
    ------
    ValueError
        For an unknown name or a file missing a required column.
    """
    _check_name(name, tuple(DATA_FILES), "data file")
    path = data_dir_path(data_dir) / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    missing = [c for c in DATA_FILES[name] if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path} lacks required column(s) {missing}; has {ds.column_names}")
    logger.debug("loaded %d records from %s", len(ds), path)
    return ds


def _rows(name: str, data_dir: str | Path | None, **match: str) -> list[dict]:
    """Records of ``name`` whose fields equal ``match``, in file order."""
    return [r for r in load_records(name, data_dir) if all(r[k] == v for k, v in match.items())]


def contrast_pairs(behaviour: str, data_dir: str | Path | None = None) -> list[PromptPair]:
    """Training contrast pairs for extracting a difference-of-means vector.

    Parameters
    ----------
    behaviour : str
        One of ``BEHAVIOURS``:
        ``"refusal"`` pairs train harmful[i] with train harmless[i] (truncated to the shorter list), no system
        prompt; ``"persona_evil"`` pairs, for train question k, (evil_system[k % n_evil], q_k) with
        (helpful_system[k % n_helpful], q_k); a trait of ``TRAITS`` (``"sentiment"``, ``"formality"``,
        ``"politeness"``, ``"agreeableness"``, ``"truthfulness"``) pairs the positive with the negative
        instruction of each of its ``traits.jsonl`` records, no system prompt.
    data_dir : str | Path | None
        Data folder override.

    Returns
    -------
    list[PromptPair]
        Pairs in file order.
    """
    _check_name(behaviour, BEHAVIOURS, "behaviour")
    if behaviour == "refusal":
        harmful = _rows("refusal", data_dir, label="harmful", split="train")
        harmless = _rows("refusal", data_dir, label="harmless", split="train")
        n = min(len(harmful), len(harmless))
        return [PromptPair(Prompt(harmful[i]["text"]), Prompt(harmless[i]["text"])) for i in range(n)]
    if behaviour == "persona_evil":
        evil = [r["text"] for r in _rows("persona_system_prompts", data_dir, label="evil")]
        helpful = [r["text"] for r in _rows("persona_system_prompts", data_dir, label="helpful")]
        if not evil or not helpful:
            raise ValueError("persona_system_prompts needs at least one 'evil' and one 'helpful' prompt")
        questions = [r["text"] for r in _rows("persona_questions", data_dir, split="train")]
        return [
            PromptPair(Prompt(q, evil[k % len(evil)]), Prompt(q, helpful[k % len(helpful)]))
            for k, q in enumerate(questions)
        ]
    rows = _rows("traits", data_dir, trait=behaviour)
    return [PromptPair(Prompt(r["positive"]), Prompt(r["negative"])) for r in rows]


def test_prompts(behaviour: str, data_dir: str | Path | None = None) -> list[Prompt]:
    """Held-out prompts on which a behaviour is steered and evaluated.

    Parameters
    ----------
    behaviour : str
        ``"refusal"``: the held-out harmful test requests; ``"persona_evil"``: the held-out test questions (no
        system prompt); a trait of ``TRAITS``: the neutral stems.
    data_dir : str | Path | None
        Data folder override.

    Returns
    -------
    list[Prompt]
        Prompts without system prompt, in file order.
    """
    _check_name(behaviour, BEHAVIOURS, "behaviour")
    if behaviour == "refusal":
        return [Prompt(r["text"]) for r in _rows("refusal", data_dir, label="harmful", split="test")]
    if behaviour == "persona_evil":
        return [Prompt(r["text"]) for r in _rows("persona_questions", data_dir, split="test")]
    return [Prompt(t) for t in neutral_stems(data_dir)]


# pytest would otherwise try to collect the function above when it is imported into a test module
test_prompts.__test__ = False  # type: ignore[attr-defined]


def neutral_stems(data_dir: str | Path | None = None) -> list[str]:
    """Neutral open-ended stems for free-text steered generation (paper B)."""
    return list(load_records("neutral_stems", data_dir)["text"])


def environments(data_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Prompts per environment (``in_distribution``, ``topic_shift``, ``genre_shift``), in file order."""
    out: dict[str, list[str]] = {}
    for r in load_records("environments", data_dir):
        out.setdefault(r["environment"], []).append(r["text"])
    return out


def refusal_paraphrases(data_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Paraphrases of the held-out harmful requests: ``test_id -> [paraphrase, ...]`` (5 each)."""
    out: dict[str, list[str]] = {}
    for r in load_records("refusal_paraphrases", data_dir):
        out.setdefault(r["test_id"], []).append(r["text"])
    return out


def labelled_texts(name: str, data_dir: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Texts and labels of a scorer-validation file.

    Parameters
    ----------
    name : str
        One of ``LABELLED_FILES``. For ``"formality_validation"`` both sides of every pair are returned,
        interleaved (formal_0, informal_0, formal_1, ...), with labels ``"formal"`` / ``"informal"``.
    data_dir : str | Path | None
        Data folder override.

    Returns
    -------
    tuple[list[str], list[str]]
        ``(texts, labels)`` of equal length.
    """
    _check_name(name, LABELLED_FILES, "labelled file")
    ds = load_records(name, data_dir)
    if name == "formality_validation":
        texts: list[str] = []
        labels: list[str] = []
        for r in ds:
            texts += [r["formal"], r["informal"]]
            labels += ["formal", "informal"]
        return texts, labels
    return list(ds["text"]), list(ds["label"])
