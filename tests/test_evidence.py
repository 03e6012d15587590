"""Claims to evidence, the claims grid, example texts and the verify comparison, on hand-made tables with known
answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steerlimits.claims import CLAIM_COLUMNS
from steerlimits.evidence import EVIDENCE, annotate, base_id, grid_html, grid_markdown, runtime
from steerlimits.examples import paper_a_examples, paper_b_examples
from steerlimits.verify import compare_frames, compare_trees


def _claims() -> pd.DataFrame:
    rows = [
        ("A", "A1", "m1", "Natural prompts invert exactly", "refusal: exact", 1.0, "== 1", "true", "10/10"),
        ("A", "A9", "m1", "Optimised prompts do not close it", "ratio", 0.9, ">= 0.5", "inconclusive", "ctrl"),
        ("B", "B2-effect", "m1", "negligible effect", "TOST p", 0.01, "< 0.05", "true", "n=20"),
        ("B", "B2-effect", "m2", "negligible effect", "TOST p", math.nan, "< 0.05", "na", "B0 failed"),
    ]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def test_annotate_names_evidence_rebuild_runtime_and_paper_values(tmp_path: Path) -> None:
    bench = tmp_path / "benchmarks" / "r" / "paperA_inversion"
    bench.mkdir(parents=True)
    (bench / "m1.tsv").write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t100\n")
    (bench / "m2.tsv").write_text("s\th:m:s\tmax_rss\n99.0\t0:01:39\t100\n")
    table = annotate(_claims(), "r", {"paperA_inversion": [str(bench / "m1.tsv"), str(bench / "m2.tsv")]})
    a1 = table[table["claim_id"] == "A1"].iloc[0]
    assert a1["evidence_tables"] == "results/r/paperA/inversion_summary.csv"
    assert a1["rebuild"].endswith("results/r/paperA/inversion_summary.csv") and "config/r.yaml" in a1["rebuild"]
    assert a1["runtime_s"] == 12.5  # only m1's job, not m2's
    assert "Llama-3.2-1B" in a1["paper_model"] and a1["paper_value"]
    assert math.isnan(table[table["claim_id"] == "B2-effect"]["runtime_s"].iloc[0])  # no benchmark given
    assert base_id("B2-effect") == "B2" and all(base_id(k) == k for k in EVIDENCE)


def test_runtime_sums_the_rules_of_the_model(tmp_path: Path) -> None:
    paths = {}
    for rule, model, s in (("a", "m1", 1.0), ("b", "m1", 2.0), ("b", "m2", 5.0)):
        p = tmp_path / rule / f"{model}.tsv"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"s\n{s}\n")
        paths.setdefault(rule, []).append(str(p))
    assert runtime(paths, ["a", "b"], "m1") == 3.0 and runtime(paths, ["b"], "m2") == 5.0


def test_grids_show_every_cell_and_link_to_its_note() -> None:
    md, page = grid_markdown(_claims(), "r"), grid_html(_claims(), "r")
    assert "## Paper A" in md and "## Paper B" in md
    assert "[inconclusive 0.9](#note-1)" in md and 'id="note-1"' in md and "na nan" in md
    assert md.count("| **") == 3  # A1, A9, B2-effect
    assert page.count("class='claims-grid'") == 2 and "inconclusive" in page and "#fff3cd" in page


def test_example_texts_are_a_seeded_draw_of_every_condition() -> None:
    rows = []
    for stem in range(10):
        for kind, fam, seed in (("zero", "", -1), ("v", "", -1), ("v+u", "null_jac", 0), ("v+u", "null_jac", 1)):
            rows.append(
                {
                    "experiment": "e1",
                    "model": "m",
                    "trait": "t",
                    "kind": kind,
                    "family": fam,
                    "seed": seed,
                    "sample": 0,
                    "prompt_index": stem,
                    "prompt": f"stem {stem}",
                    "alpha": 2.0,
                    "continuation": f"{kind} {stem}",
                    "score": float(stem),
                    "scorer": "s",
                }
            )
    pool = pd.DataFrame(rows)
    a, b = paper_b_examples(pool, 3, seed=1), paper_b_examples(pool, 3, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert a["item"].nunique() == 3 and len(a) == 9  # zero, v and the first u draw per stem
    assert not a.equals(paper_b_examples(pool, 3, seed=2))
    assert set(a["condition"]) == {"unsteered (alpha 0)", "steered v (alpha 2)", "v + u (null_jac)"}
    beh = pd.DataFrame(
        [
            {"model": "m", "vector": "refusal", "prompt": p, "condition": c, "continuation": "x", "attack_success": 1.0}
            for p in range(5)
            for c in ("baseline", "steered", "recovered")
        ]
    )
    assert len(paper_a_examples(beh, 2, seed=1)) == 6


def test_compare_frames_tolerance_strings_nan_and_timing_columns() -> None:
    old = pd.DataFrame({"n": [1, 2], "x": [1.0, np.nan], "s": ["a", None], "wall_s": [1.0, 2.0]})
    same = old.assign(x=[1.0 + 5e-5, np.nan], wall_s=[9.0, 9.0])
    assert compare_frames(same, old).match
    assert not compare_frames(old.assign(x=[1.001, np.nan]), old).match
    assert not compare_frames(old.assign(n=[1, 3]), old).match
    assert not compare_frames(old.assign(s=["a", "b"]), old).match
    assert not compare_frames(old.assign(x=[1.0, 2.0]), old).match  # a missing value became a number
    assert not compare_frames(old.iloc[:1], old).match


def test_compare_trees_ignores_timings_in_sidecars_but_not_results(tmp_path: Path) -> None:
    import json

    for name, wall, value in (("a", 1.0, 1), ("b", 2.0, 1)):
        d = tmp_path / name / "results"
        d.mkdir(parents=True)
        (d / "t.csv").write_text(f"v,wall_s\n{value},{wall}\n")
        (d / "t.csv.meta.json").write_text(json.dumps({"rule": "r", "wall_s": wall, "timings_s": {"x": wall}}))
    assert all(c.match for c in compare_trees(tmp_path / "a", tmp_path / "b", ("results",)))
    (tmp_path / "b" / "results" / "t.csv").write_text("v,wall_s\n2,1.0\n")
    assert not all(c.match for c in compare_trees(tmp_path / "a", tmp_path / "b", ("results",)))


@pytest.mark.parametrize("key", ["rule", "settings", "config_hash"])
def test_a_step_cannot_overwrite_the_jobs_record(key: str) -> None:
    from steerlimits.provenance import job_context, record

    with job_context(rule="r", config_hash="h", settings={}, settings_hash="s"), pytest.raises(ValueError):
        record(**{key: "x"})
