"""Paper B (steerlimits.paperb): pool planning, batched per-row steering, continuation-only scoring, statistics
tables and claims on synthetic scores with known answers, E4 logit metrics, E7 helpers, config schema."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from snakemake.utils import validate

from steerlimits import nullspace as ns
from steerlimits.data import Prompt
from steerlimits.paperb import claims as C
from steerlimits.paperb import nullspace_step as N
from steerlimits.paperb import tables as T
from steerlimits.paperb.generation import run_pool
from steerlimits.paperb.logits import PrefixCache, logit_metrics, next_token_logits, plan_offsets
from steerlimits.paperb.plan import Condition, env_indices, plan_pool
from steerlimits.scoring import score_table
from steerlimits.settings import stage, validate_config
from steerlimits.settings.paperb import PaperBGenerate
from steerlimits.prompting import encode_all
from steerlimits.steer import GenerationConfig, generate

SCHEMA = str(Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "paperB.schema.yaml")


def _pb(**over: object) -> PaperBGenerate:
    """The ``paperB_generate`` settings of a small config, resolved as the workflow resolves them."""
    pb = {"enabled": True, "e1": {"n_stems": 4, "n_seeds": 3, "samples_v": 2},
          "e2": {"alphas": [0, 0.5, 1, 2], "n_seeds": 2}, "e3": {"n_prompts": 3, "n_seeds": 2},
          "e5": {"n_prompts": 4}, "e6": {"n_directions": 3, "samples": 2, "ks": [1, 2, 4], "n_draws": 2}, **over}
    config = validate_config({"run": "t", "seed": 1, "paperB": pb, "models": {"tiny": {
        "source": "random", "architecture": "llama", "random": {"n_layers": 2, "d_model": 24}}}})
    return stage(config, "paperB_generate", model="tiny", trait="sentiment")


@pytest.fixture(scope="module")
def planted() -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    d = 24
    q = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    v = (q[:, :6] @ torch.tensor([3.0, 1, 1, 1, 1, 1], dtype=torch.float64) + 0.1 * q[:, 20]).float()
    null = q[:, 10:].float()  # v has a small component in the null space: S ∩ v⊥ must be handled
    return v, {"null_cov": q[:, 14:].float(), "null_jac": null, "active": q[:, :10].float()}


# ------------------------------------------------------------------------------------------------ config
def test_schema_fills_defaults_and_rejects_unknown_keys() -> None:
    cfg = {"enabled": True, "e1": {"n_stems": 3}}
    validate(cfg, SCHEMA)
    assert cfg["e1"] == {"n_stems": 3, "n_seeds": 5, "samples_per_seed": 1, "samples_v": 4, "samples_u": 1,
                         "samples_neg": 1}
    assert cfg["e7"]["jac_prompts"] == 32 and cfg["temperature"] == 0.8 and cfg["top_p"] == 1.0
    assert cfg["families"] == ["random_orth", "null_cov", "null_jac", "active"]
    with pytest.raises(Exception, match="top_k"):
        validate({"top_k": 20}, SCHEMA)


# ------------------------------------------------------------------------------------------------ plan
def test_pool_perturbations_inside_bases_orthogonal_and_norm_matched(planted) -> None:
    v, bases = planted
    pool = plan_pool(_pb(), v=v, v_pca=v.flip(0), bases=bases, n_stems=10, environments={"a": 5, "b": 9}, seed=3)
    by = {c.cond: c for c in pool.conditions}
    for fam in ("null_cov", "null_jac", "active", "random_orth"):
        for s in range(3):
            u = by[f"e1/v+u/{fam}/s{s}"].offset - v
            assert float(u.norm()) == pytest.approx(float(v.norm()), rel=1e-5)
            assert abs(float(u @ v)) < 1e-4 * float(v.norm()) ** 2
            if fam != "random_orth":
                b = bases[fam].double()
                assert float((u.double() - b @ (b.T @ u.double())).norm()) < 1e-5 * float(u.norm())
        torch.testing.assert_close(by[f"e1/u/{fam}"].offset, by[f"e1/v+u/{fam}/s0"].offset - v)
    # E6: orthonormal directions inside null_jac; combinations norm-matched
    us = pool.perturbations["e6/null_jac"]
    torch.testing.assert_close(us.double() @ us.double().T, float(v.norm()) ** 2 * torch.eye(4, dtype=torch.float64),
                               atol=1e-4, rtol=0)
    for k in (1, 2, 4):
        w = by[f"e6b/null_jac/k{k}/d1"].offset - v
        assert float(w.norm()) == pytest.approx(float(v.norm()), rel=1e-5)
        coef = torch.linalg.lstsq(us[:k].T.double(), w.double()[:, None]).solution
        assert float((us[:k].T.double() @ coef - w.double()[:, None]).norm()) < 1e-4  # in span(u_1..u_k)


def test_pool_reuse_shared_draws_counts_and_notes(planted) -> None:
    v, bases = planted
    pb = _pb(alpha=1.0)
    pool = plan_pool(pb, v=v, v_pca=v, bases=bases, n_stems=10, environments={"a": 5, "b": 9}, seed=3)
    by = {c.cond: c for c in pool.conditions}
    e2 = [c for c in pool.conditions if c.experiment == "e2"]
    assert {c.alpha for c in e2} == {0.5, 2.0}  # alpha 0 and alpha 1 come from E1
    torch.testing.assert_close(by["e2/v+u/random_orth/s1/a2"].offset, 2 * by["e1/v+u/random_orth/s1"].offset)
    torch.testing.assert_close(by["e3/b/v+u/random_orth/s1"].offset, by["e1/v+u/random_orth/s1"].offset)
    assert len(by["e1/v"].jobs) == 8 and len(by["e1/v+u/null_jac/s0"].jobs) == 4 and len(by["e3/b/v"].jobs) == 3
    assert sorted({p for p, _ in by["e3/b/zero"].jobs}) == [0, 4, 8]
    assert not pool.notes
    # an empty null space: family skipped everywhere and recorded; E6 reduced to the available dimension
    small = {**bases, "null_jac": bases["null_jac"][:, :0], "null_cov": bases["null_cov"][:, :2]}
    pool = plan_pool(pb, v=v, v_pca=v, bases=small, n_stems=10, environments={"a": 5}, seed=3)
    assert not any(c.family == "null_jac" for c in pool.conditions)
    assert any("null_jac" in n and "empty" in n for n in pool.notes)
    # same seed, same plan; another seed, other draws
    again = plan_pool(pb, v=v, v_pca=v, bases=bases, n_stems=10, environments={"a": 5, "b": 9}, seed=3)
    other = plan_pool(pb, v=v, v_pca=v, bases=bases, n_stems=10, environments={"a": 5, "b": 9}, seed=4)
    torch.testing.assert_close(again.perturbations["u/null_jac/s0"], by["e1/u/null_jac"].offset[None])
    assert not torch.allclose(other.perturbations["u/null_jac/s0"], again.perturbations["u/null_jac/s0"])


def test_env_indices_cover_the_set() -> None:
    assert env_indices(15, 9)[0] == 0 and env_indices(15, 9)[-1] == 14 and len(env_indices(15, 9)) == 9
    assert env_indices(4, 9) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------- generation + scoring
PROMPTS = [Prompt("Tell me about the harbour"), Prompt("A short note on the weather in spring, please"),
           Prompt("Why"), Prompt("Describe the old library on the hill")]


def test_mixed_condition_batches_equal_separate_runs_and_scoring_sees_continuations_only(tiny_llama) -> None:
    model, tok = tiny_llama
    ids = encode_all(tok, PROMPTS, "raw")
    d = model.config.hidden_size
    g = torch.Generator().manual_seed(5)
    vecs = {"zero": torch.zeros(d), "a": 6 * torch.randn(d, generator=g), "b": 6 * torch.randn(d, generator=g)}
    conds = [Condition(name, "e1", name, vec, "p", [(i, 0) for i in range(4)], 5) for name, vec in vecs.items()]
    rows = run_pool(model, tok, conds, {"p": ids}, layer=1, positions="last_prompt_and_generated", temperature=0.0,
                    top_p=1.0, batch_size=5, seed=1, progress=False)  # batches mix conditions and prompts
    assert len(rows) == 12
    cfg = GenerationConfig(max_new_tokens=5, temperature=0.0, batch_size=4)
    for name, vec in vecs.items():
        alone = generate(model, tok, ids, cfg, vector=vec, alpha=1.0, layer=1, positions="last_prompt_and_generated",
                         progress=False)
        got = {r["prompt_index"]: r["continuation"] for r in rows if r["cond"] == name}
        assert [got[i] for i in range(4)] == [x.continuation for x in alone]
    assert len({r["continuation"] for r in rows if r["prompt_index"] == 1}) > 1  # the vectors do act

    class Recorder:
        class info:  # noqa: N801 - mimics ScorerInfo
            name, substitute_for = "recorder", "nothing"

        seen: list[str] = []

        def score(self, texts: list[str]) -> np.ndarray:
            self.seen.extend(texts)
            return np.array([len(t) for t in texts], float)

    rec = Recorder()
    scored = score_table(pd.DataFrame(rows), rec)
    assert rec.seen == [r["continuation"] for r in rows]
    assert (scored["score"] == scored["continuation"].str.len()).all()
    for r in rows:
        assert r["prompt"].strip() and not r["continuation"].startswith(r["prompt"].strip())


# ------------------------------------------------------------------------------------- tables and claims
def _synthetic_pool(shift_v: float, n: int = 400) -> pd.DataFrame:
    base = np.random.default_rng(0).standard_normal(n)
    base = (base - base.mean()) / base.std(ddof=1)  # mean 0, sd 1 exactly
    rows = []

    def add(kind: str, scores: np.ndarray, family: str = "", seed: int = -1) -> None:
        rows.extend({"model": "m", "trait": "t", "experiment": "e1", "kind": kind, "family": family, "seed": seed,
                     "alpha": 1.0, "environment": "", "direction": -1, "k": 0, "draw": -1, "prompt_index": i % 8,
                     "score": float(s), "scorer": "syn", "substitute_for": "x"} for i, s in enumerate(scores))

    add("zero", base)
    add("v", base + shift_v)
    add("neg_v", base - shift_v, family="neg_v")
    for s in range(2):
        add("v+u", base + shift_v, family="random_orth", seed=s)  # identical to v: d = 0, efficacy 1
        add("v+u", base + shift_v, family="null_jac", seed=s)
        add("v+u", base + shift_v - 1.0, family="active", seed=s)  # d = -1
    add("u", base, family="random_orth", seed=0)
    return pd.DataFrame(rows)


def test_orthogonal_table_known_answers() -> None:
    t1 = T.orthogonal_test(_synthetic_pool(0.8), T.Ctx(1, 300, 0.2)).set_index("condition")
    assert t1.loc["v", "cohens_d"] == pytest.approx(0.8) and t1.loc["v", "reference"] == "alpha0"
    assert t1.loc["v+u[random_orth]", "cohens_d"] == pytest.approx(0.0, abs=1e-12)
    assert t1.loc["v+u[random_orth]", "efficacy"] == pytest.approx(1.0)
    assert t1.loc["v+u[random_orth]", "n"] == 800 and t1.loc["v+u[random_orth, seed 1]", "n"] == 400
    assert t1.loc["v+u[active, seed 0]", "cohens_d"] == pytest.approx(-1.0)  # 400 vs 400, both sd 1
    pooled = np.tile(np.asarray(_synthetic_pool(0.8).query("kind == 'v'")["score"]), 2) - 1.0  # 800 copies
    assert t1.loc["v+u[active]", "cohens_d"] == pytest.approx((pooled.mean() - 0.8) / math.sqrt(
        (799 * pooled.var(ddof=1) + 399 * 1.0) / 1198), rel=1e-12)
    assert t1.loc["v+u[active]", "efficacy"] == pytest.approx((0.8 - 1.0) / 0.8)
    assert t1.loc["neg_v", "efficacy"] == pytest.approx(-1.0) and t1.loc["neg_v", "efficacy_raw"] == pytest.approx(-1.0)
    assert t1.loc["u[random_orth]", "efficacy"] == pytest.approx(0.0, abs=1e-12)
    assert t1.loc["v+u[random_orth]", "tost_p"] < 1e-3  # identical groups of 400 vs 400
    assert t1.loc["v+u[random_orth]", "eff_ci_low"] < 1 < t1.loc["v+u[random_orth]", "eff_ci_high"]


def _claims(shift: float) -> pd.DataFrame:
    t1 = T.orthogonal_test(_synthetic_pool(shift), T.Ctx(1, 200, 0.2))
    empty = pd.DataFrame(columns=["model", "trait", "condition", "seed", "alpha", "n", "n_ref", "cohens_d", "tost_p",
                                  "ratio_to_random", "n_prefixes", "part", "draw", "family"])
    t7 = pd.DataFrame([{"model": "m", "layer": 15, "method": "covariance", "threshold": 0.01, "null_fraction": 0.9,
                        "effective_rank": 50, "d": 500, "n_samples": 2000},
                       {"model": "m", "layer": 15, "method": "jacobian", "threshold": 0.01, "null_fraction": 0.1,
                        "effective_rank": 450, "d": 500, "n_samples": 32}])
    rows = C.claims_rows(t1, empty, empty, empty, empty, empty, t7, master_seed=0, steer_layers={"m": 15})
    return pd.DataFrame([r.__dict__ for r in rows])


def test_claims_known_answers_and_na_when_b0_fails() -> None:
    df = _claims(0.8).set_index("claim_id")
    assert df.loc["B0", "holds"] == "true" and df.loc["B1", "holds"] == "true"
    assert df.loc["B2-paper", "holds"] == "true" and df.loc["B2-strict", "holds"] == "true"
    assert "n1=800, n2=400" in df.loc["B2-strict", "note"] and "power" in df.loc["B2-strict", "note"]
    b3 = df.loc["B3-paper"]
    assert list(b3["holds"]) == ["true", "false"]  # null_jac equivalent; null_cov absent -> not shown
    assert df.loc["B4", "holds"] == "true" and df.loc["B4", "value"] == pytest.approx(1.0, rel=1e-3)
    assert df.loc["B5-paper", "holds"] == "false" and "unavailable" in df.loc["B5-paper", "note"]
    b10 = df.loc["B10"].set_index("metric")["holds"].to_dict()
    assert b10 == {"null fraction at L/2, covariance 1e-2": "true", "null fraction at L/2, jacobian 1 %": "false"}
    weak = _claims(0.3).set_index("claim_id")  # d(v, 0) = 0.3 < 0.5
    assert weak.loc["B0", "holds"] == "false"
    assert (weak.drop(index=["B0", "B10"])["holds"] == "na").all()
    assert weak.loc["B2-paper", "note"].startswith("na: B0 failed")
    assert set(weak.loc["B10", "holds"]) == {"true", "false"}  # B10 does not depend on B0


def test_paper_power_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    n1, n2 = 40, 60
    x, y = rng.standard_normal((4000, n1)), rng.standard_normal((4000, n2))
    sp = np.sqrt(((n1 - 1) * x.var(1, ddof=1) + (n2 - 1) * y.var(1, ddof=1)) / (n1 + n2 - 2))
    sim = np.mean(np.abs((x.mean(1) - y.mean(1)) / sp) < 0.2)
    assert C.paper_power(n1, n2) == pytest.approx(sim, abs=0.03)


# ---------------------------------------------------------------------------------------------- E4 / E7
def test_logit_metrics_known_answers() -> None:
    z = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    same = logit_metrics(z, z.clone())
    assert float(same["l2"].abs().max()) == 0 and float(same["kl"].max()) < 1e-12
    assert same["argmax_agree"].tolist() == [1.0] * 3 and same["top10_overlap"].tolist() == [1.0] * 3
    shifted = logit_metrics(z, z + 2.0)  # softmax is shift invariant
    assert shifted["l2"].tolist() == pytest.approx([2.0 * math.sqrt(50)] * 3) and float(shifted["kl"].max()) < 1e-12
    flipped = logit_metrics(z, -z)
    assert flipped["argmax_agree"].tolist() == [0.0] * 3 and float(flipped["kl"].min()) > 0


def test_e4_offsets_norm_matched(planted) -> None:
    v, bases = planted
    conds = plan_offsets(v, bases, ["random_orth", "null_jac", "active"], alpha=2.0, n_u=3, n_r=2, seed=1)
    assert [c["condition"] for c in conds].count("v+u") == 9 and [c["condition"] for c in conds].count("v+r") == 2
    for c in conds:
        if c["condition"] in ("v+u", "v+r"):
            pert = c["offset"] / 2.0 - v
            assert float(pert.norm()) == pytest.approx(float(v.norm()), rel=1e-5)


def test_e4_other_trait_control_replaces_v_at_its_norm(planted) -> None:
    v, bases = planted
    w = torch.randn(v.numel(), generator=torch.Generator().manual_seed(3), dtype=v.dtype) * 7.0
    conds = plan_offsets(v, bases, ["random_orth"], alpha=2.0, n_u=1, n_r=1, seed=1, others={"formality": w})
    other = [c for c in conds if c["condition"] == "other"]
    assert len(other) == 1 and other[0]["family"] == "formality"
    off = other[0]["offset"]
    assert float(off.norm()) == pytest.approx(2.0 * float(v.norm()), rel=1e-6)  # α‖v‖, not ‖w‖
    assert float(torch.nn.functional.cosine_similarity(off, w, dim=0)) == pytest.approx(1.0, abs=1e-6)
    assert [c["condition"] for c in plan_offsets(v, bases, [], alpha=1.0, n_u=1, n_r=0, seed=1)] == ["zero", "v"]


def test_e7_layers_and_streaming_covariance() -> None:
    assert N.e7_layers(30, 15) == {7: "L/4", 15: "L/2", 22: "3L/4"}
    assert N.e7_layers(30, 16) == {7: "L/4", 15: "L/2", 16: "steer", 22: "3L/4"}
    x = torch.randn(500, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1000.0
    acc = N.CovAccumulator()
    for chunk in x.split(77):
        acc.add(chunk)
    sv, vecs = acc.decomposition()
    ref_sv, ref_vecs = ns.covariance_decomposition(x)
    np.testing.assert_allclose(sv, ref_sv, rtol=1e-9)
    np.testing.assert_allclose(np.abs(vecs.T @ ref_vecs).diagonal(), 1.0, atol=1e-6)


def test_covariance_collection_excludes_first_position(tiny_llama) -> None:
    model, tok = tiny_llama
    texts = ["one two three four", "the harbour at dawn", "a b", "some more words here please"]
    res = N.collect_covariances(model, tok, texts, [0, 2], min_tokens=10_000, steer_layer=2, batch_size=3,
                                progress=False)
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    assert res.n_prompts == 4 and res.n_excluded == 4
    assert res.excluded[0].n == res.excluded[2].n == sum(lengths) - 4
    assert res.with_pos0.n == sum(lengths)


@pytest.fixture(scope="module")
def tiny_gemma() -> tuple[torch.nn.Module, object]:
    from steerlimits.tiny import build_random_model

    return build_random_model("gemma3_text", {"n_layers": 3, "d_model": 32, "n_heads": 4, "n_kv_heads": 1,
                                              "vocab_size": 300, "seed": 0})


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
def test_prefix_cache_logits_equal_full_steered_forward(which: str, request: pytest.FixtureRequest) -> None:
    model, tok = request.getfixturevalue(which)
    ids = encode_all(tok, PROMPTS, "raw")
    d = model.config.hidden_size
    offsets = 5 * torch.randn(len(ids), d, generator=torch.Generator().manual_seed(2))
    cache = PrefixCache(model, tok, ids, batch_size=3)  # two batches, left padding in each
    for layer in (0, 2):
        full = next_token_logits(model, tok, ids, offsets, layer)
        torch.testing.assert_close(cache.logits(offsets, layer), full, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cache.logits(offsets, layer), full, atol=1e-4, rtol=1e-4)  # cache not consumed
        plain = next_token_logits(model, tok, ids, torch.zeros_like(offsets), layer)
        assert float((full - plain).abs().max()) > 1e-3  # the offsets act at the last position
    single = [next_token_logits(model, tok, [p], offsets[i:i + 1], 1) for i, p in enumerate(ids)]
    torch.testing.assert_close(cache.logits(offsets, 1), torch.cat(single), atol=1e-4, rtol=1e-4)


def test_per_row_vectors_must_match_the_batch(tiny_llama) -> None:
    from steerlimits.hooks import add_vector

    model, tok = tiny_llama
    ids = torch.tensor([encode_all(tok, [PROMPTS[0]], "raw")[0]] * 2)
    d = model.config.hidden_size
    with pytest.raises(ValueError, match="per-row vectors for a batch of 2"):
        with add_vector(model, 1, torch.ones(3, d), 1.0), torch.no_grad():
            model(input_ids=ids)
    rows = torch.stack([torch.zeros(d), 4 * torch.ones(d)])
    with add_vector(model, 1, rows, 1.0), torch.no_grad():
        both = model(input_ids=ids).logits
    with torch.no_grad():
        plain = model(input_ids=ids[:1]).logits
    torch.testing.assert_close(both[0], plain[0])  # a zero row leaves its row bit-identical
    assert float((both[1] - plain[0]).abs().max()) > 1e-3


def test_f8_greys_only_panels_where_b0_fails() -> None:
    from steerlimits.paperb.figures import f8_efficacy

    rows = []
    for trait, d0 in (("sentiment", 0.9), ("formality", 0.2)):
        rows.append({"model": "m", "trait": trait, "condition": "v", "seed": np.nan, "family": np.nan,
                     "cohens_d": d0, "efficacy": 1.0, "eff_ci_low": 1.0, "eff_ci_high": 1.0})
        for fam in ("null_jac", "null_cov", "random_orth", "active"):
            rows.append({"model": "m", "trait": trait, "condition": f"v+u[{fam}]", "seed": "pooled", "family": fam,
                         "cohens_d": 0.0, "efficacy": 0.9, "eff_ci_low": 0.8, "eff_ci_high": 1.0})
    fig = f8_efficacy(pd.DataFrame(rows))
    by_title = {ax.get_title(): ax for ax in fig.axes}
    ok, bad = by_title["m · sentiment"], by_title["m · formality"]
    assert [t.get_text() for t in ok.texts] == []
    assert any("B0 fails" in t.get_text() and "0.20" in t.get_text() for t in bad.texts)
    assert bad.get_facecolor() != ok.get_facecolor()
