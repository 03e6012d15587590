"""Paper B (steerlimits.paperb): stem split and disjoint estimation prompts, pool planning (paired design),
common random numbers, fluency, calibration and power design, paired tables and claims with known answers, where v
lives, E4 logit metrics, E7 helpers, bf16 generation, figures, config schema."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from snakemake.utils import validate

from steerlimits import data as D
from steerlimits import nullspace as ns
from steerlimits.data import Prompt
from steerlimits.paperb import calibrate as K
from steerlimits.paperb import claims as C
from steerlimits.paperb import nullspace_step as N
from steerlimits.paperb import tables as T
from steerlimits.paperb.generation import CRNSampler, continuation_nll, crn_seed, generate_rows, run_pool
from steerlimits.paperb.geometry import fraction, rayleigh_ratio
from steerlimits.paperb.logits import PrefixCache, logit_metrics, next_token_logits, plan_offsets
from steerlimits.paperb.plan import Condition, env_indices, plan_pool, stem_split
from steerlimits.prompting import encode_all
from steerlimits.scoring import score_table
from steerlimits.settings import stage, validate_config
from steerlimits.settings.paperb import PaperBGenerate
from steerlimits.steer import as_dtype

SCHEMA = str(Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "paperB.schema.yaml")
DATA = Path(__file__).resolve().parents[1] / "data"


def _pb(**over: object) -> PaperBGenerate:
    """The ``paperB_generate`` settings of a small config, resolved as the workflow resolves them."""
    pb = {
        "enabled": True,
        "e1": {"n_stems": 4},
        "e2": {"alphas": [0, 0.5, 1, 2], "samples": 2},
        "e3": {"n_prompts": 3, "samples": 2},
        "e6": {"n_directions": 3, "samples": 2, "ks": [1, 2, 4], "n_draws": 2, "n_stems_b": 3},
        **over,
    }
    config = validate_config(
        {
            "run": "t",
            "seed": 1,
            "paperB": pb,
            "models": {"tiny": {"source": "random", "architecture": "llama", "random": {"n_layers": 2, "d_model": 24}}},
        }
    )
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
    cfg = {"enabled": True, "e1": {"samples_u": 2}}
    validate(cfg, SCHEMA)
    assert cfg["e1"] == {"n_stems": None, "samples_u": 2, "samples_neg": 1}
    assert cfg["calibration"]["target_d"] == 1.0 and cfg["calibration"]["max_ppl_ratio"] == 2.0
    assert cfg["alpha_mode"] == "calibrated" and cfg["alpha"] == 1.0 and cfg["delta"] == 0.2
    assert cfg["sentiment_score"] == "prob_diff" and cfg["dtype"] == "bfloat16" and cfg["active_k"] == 16
    assert cfg["families"] == ["random_orth", "null_cov", "null_jac", "active"]
    with pytest.raises(Exception, match="top_k"):
        validate({"top_k": 20}, SCHEMA)


def test_sentiment_scorer_is_continuous_by_default() -> None:
    base = {
        "run": "t",
        "seed": 1,
        "models": {"tiny": {"source": "random", "architecture": "llama", "random": {"n_layers": 2, "d_model": 24}}},
    }
    cont = stage(validate_config({**base, "paperB": {"enabled": True}}), "paperB_score")
    paper = stage(
        validate_config({**base, "paperB": {"enabled": True, "sentiment_score": "signed_argmax"}}), "paperB_score"
    )
    assert cont.scorers["sentiment"] == "sentiment_prob" and paper.scorers["sentiment"] == "sentiment"
    assert cont.scorers["formality"] == paper.scorers["formality"] == "formality"


def test_spectra_are_summarised_at_the_null_space_thresholds() -> None:
    """B10 reads B-T7 at ``null_thresholds``: they are always among the summarised thresholds."""
    base = {
        "run": "t",
        "seed": 1,
        "models": {"tiny": {"source": "random", "architecture": "llama", "random": {"n_layers": 2, "d_model": 24}}},
    }
    config = validate_config(
        {**base, "paperB": {"enabled": True, "null_thresholds": {"covariance": 0.2, "jacobian": 0.5}}}
    )
    ns = stage(config, "paperB_nullspace", model="tiny")
    assert 0.2 in ns.e7.cov_thresholds and 0.5 in ns.e7.jac_thresholds and 0.01 in ns.e7.cov_thresholds
    assert 0.5 in stage(config, "paperB_logits", model="tiny").jac_thresholds
    fig = stage(config, "paperB_figures")
    assert 0.2 in fig.cov_thresholds and 0.5 in fig.jac_thresholds


# ------------------------------------------------------------------------------------ disjoint prompt sets
def test_calibration_evaluation_and_estimation_prompts_are_disjoint() -> None:
    stems = D.neutral_stems(DATA)
    evaluation, calibration = stem_split(len(stems), 12)
    assert not set(evaluation) & set(calibration) and len(evaluation) + len(calibration) == len(stems)
    assert len(evaluation) >= 32  # E1's n of the power calculation
    estimation = set(N.estimation_texts(str(DATA)))
    evaluated = {stems[i] for i in evaluation + calibration}  # E1/E2/E4/E5/E6 prefixes and calibration stems
    for prompts in D.environments(DATA).values():  # E3
        evaluated.update(prompts)
    assert not estimation & evaluated
    assert len(estimation) >= 64  # enough prompts for the Jacobian (32 at the steering layer)
    with pytest.raises(ValueError, match="fewer than 2"):
        stem_split(10, 9)


# ------------------------------------------------------------------------------------------------ plan
def _plan(planted, **kw):
    v, bases = planted
    args = dict(
        v=v,
        v_pca=v.flip(0),
        bases=bases,
        alpha=2.0,
        samples=3,
        eval_stems=list(range(10)),
        environments={"a": 5, "b": 9},
        seed=3,
    )
    args.update(kw)
    return plan_pool(_pb(), **args)


def test_pool_perturbations_inside_bases_orthogonal_norm_matched_and_paired(planted) -> None:
    v, bases = planted
    pool = _plan(planted)
    by = {c.cond: c for c in pool.conditions}
    for fam in ("null_cov", "null_jac", "active", "random_orth"):
        for s in range(3):
            c = by[f"e1/v+u/{fam}/s{s}"]
            u = c.offset / 2.0 - v
            assert float(u.norm()) == pytest.approx(float(v.norm()), rel=1e-5)
            assert abs(float(u @ v)) < 1e-4 * float(v.norm()) ** 2
            if fam != "random_orth":
                b = bases[fam].double()
                assert float((u.double() - b @ (b.T @ u.double())).norm()) < 1e-5 * float(u.norm())
            assert c.jobs == [(p, s) for p in range(4)]  # seed s at sample s: paired with v's s-th sample
        torch.testing.assert_close(by[f"e1/u/{fam}"].offset, by[f"e1/v+u/{fam}/s0"].offset - 2.0 * v)
    assert sorted(by["e1/v"].jobs) == sorted(by["e1/zero"].jobs) == sorted(by["e5/pca"].jobs)
    assert len(by["e1/v"].jobs) == 4 * 3
    # E2 at multiples of the calibrated alpha; 0 and 1 x come from E1
    e2 = [c for c in pool.conditions if c.experiment == "e2"]
    assert {c.alpha_multiple for c in e2} == {0.5, 2.0} and {c.alpha for c in e2} == {1.0, 4.0}
    torch.testing.assert_close(by["e2/v+u/random_orth/s1/m2"].offset, 2 * by["e1/v+u/random_orth/s1"].offset)
    torch.testing.assert_close(by["e3/b/v+u/random_orth/s1"].offset, by["e1/v+u/random_orth/s1"].offset)
    assert sorted({p for p, _ in by["e3/b/zero"].jobs}) == [0, 4, 8]
    # E6: orthonormal directions inside null_jac; combinations norm-matched and in the span
    us = pool.perturbations["e6/null_jac"]
    torch.testing.assert_close(
        us.double() @ us.double().T, float(v.norm()) ** 2 * torch.eye(4, dtype=torch.float64), atol=1e-4, rtol=0
    )
    for k in (1, 2, 4):
        w = by[f"e6b/null_jac/k{k}/d1"].offset / 2.0 - v
        assert float(w.norm()) == pytest.approx(float(v.norm()), rel=1e-5)
        coef = torch.linalg.lstsq(us[:k].T.double(), w.double()[:, None]).solution
        assert float((us[:k].T.double() @ coef - w.double()[:, None]).norm()) < 1e-4
    assert pool.family_dims["random_orth"] == 23 and not pool.notes


def test_pool_small_and_empty_families_and_determinism(planted) -> None:
    v, bases = planted
    one = torch.linalg.qr(torch.randn(24, 2, generator=torch.Generator().manual_seed(9)))[0]
    one = torch.cat([one[:, :1], (v / v.norm())[:, None]], 1)  # span ∩ v⊥ is one-dimensional
    small = {**bases, "null_jac": bases["null_jac"][:, :0], "null_cov": one}
    pool = _plan(planted, bases=small)
    assert not any(c.family == "null_jac" for c in pool.conditions)
    assert any("null_jac" in n and "empty" in n for n in pool.notes)
    assert pool.family_dims["null_cov"] == 1 and any("null_cov" in n and "< 2" in n for n in pool.notes)
    again, other = _plan(planted), _plan(planted, seed=4)
    first = _plan(planted)
    torch.testing.assert_close(again.perturbations["u/null_jac/s0"], first.perturbations["u/null_jac/s0"])
    assert not torch.allclose(other.perturbations["u/null_jac/s0"], again.perturbations["u/null_jac/s0"])


def test_env_indices_cover_the_set() -> None:
    assert env_indices(15, 9)[0] == 0 and env_indices(15, 9)[-1] == 14 and len(env_indices(15, 9)) == 9
    assert env_indices(4, 9) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------ common random numbers
PROMPTS = [
    Prompt("Tell me about the harbour"),
    Prompt("A short note on the weather in spring, please"),
    Prompt("Why"),
    Prompt("Describe the old library on the hill"),
]


def test_crn_sampler_draws_from_the_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -30.0, 0.5])
    n = 6000
    sampler = CRNSampler(list(range(n)), temperature=0.8)
    picks = sampler(None, logits.expand(n, -1).clone()).argmax(-1)  # type: ignore[arg-type]
    freq = torch.bincount(picks, minlength=6).double() / n
    p = torch.softmax(logits.double() / 0.8, -1)
    assert float((freq - p).abs().max()) < 4 * math.sqrt(0.25 / n)
    assert int(freq[4]) == 0  # a token of negligible probability is (almost) never drawn
    same = CRNSampler([5, 5, 6], temperature=0.8)(None, logits.expand(3, -1).clone()).argmax(-1)  # type: ignore[arg-type]
    assert int(same[0]) == int(same[1])  # same stream, same draw
    topk = CRNSampler(list(range(500)), temperature=0.8, top_k=2)(None, logits.expand(500, -1).clone())  # type: ignore[arg-type]
    assert set(topk.argmax(-1).tolist()) <= {0, 1}


def test_common_random_numbers_across_conditions_and_batches(tiny_llama) -> None:
    """Same offset + same (stem, sample): the same continuation whatever the batch and the other rows; other
    (stem, sample) pairs: other streams; a different offset changes continuations."""
    model, tok = tiny_llama
    ids = encode_all(tok, PROMPTS, "raw")
    d = model.config.hidden_size
    g = torch.Generator().manual_seed(5)
    a, b = 6 * torch.randn(d, generator=g), 6 * torch.randn(d, generator=g)
    jobs = [(i, s) for s in range(3) for i in range(4)]
    conds = [
        Condition("a", "e1", "v", a, "p", jobs, 6),
        Condition("a2", "e1", "v", a, "p", jobs, 6),
        Condition("b", "e1", "v+u", b, "p", jobs, 6),
    ]
    mixed = run_pool(
        model,
        tok,
        conds,
        {"p": ids},
        layer=1,
        positions="last_prompt_and_generated",
        temperature=0.8,
        top_p=1.0,
        batch_size=5,
        seed=1,
        progress=False,
    )
    alone = run_pool(
        model,
        tok,
        conds[:1],
        {"p": ids},
        layer=1,
        positions="last_prompt_and_generated",
        temperature=0.8,
        top_p=1.0,
        batch_size=3,
        seed=1,
        progress=False,
    )
    text = {(r["cond"], r["prompt_index"], r["sample"]): r["continuation"] for r in mixed}
    for r in alone:
        assert text[("a", r["prompt_index"], r["sample"])] == r["continuation"]
        assert text[("a2", r["prompt_index"], r["sample"])] == r["continuation"]
    per_sample = {s: [text[("a", i, s)] for i in range(4)] for s in range(3)}
    assert len({tuple(x) for x in per_sample.values()}) == 3  # samples of a stem follow different streams
    assert sum(text[("a", i, s)] != text[("b", i, s)] for i, s in jobs) >= 6  # the vectors do act
    assert crn_seed(1, "p", 0, 0) != crn_seed(1, "p", 0, 1) != crn_seed(1, "p", 1, 0)

    class Recorder:
        class info:  # noqa: N801 - mimics ScorerInfo
            name, substitute_for = "recorder", "nothing"

        seen: list[str] = []

        def score(self, texts: list[str]) -> np.ndarray:
            self.seen.extend(texts)
            return np.array([len(t) for t in texts], float)

    rec = Recorder()
    scored = score_table(pd.DataFrame(mixed), rec)
    assert rec.seen == [r["continuation"] for r in mixed]  # continuation only, never the prompt
    assert (scored["score"] == scored["continuation"].str.len()).all()


def test_bf16_generation_copy_and_nll(tiny_llama) -> None:
    model, tok = tiny_llama
    ids = encode_all(tok, PROMPTS, "raw")
    b16 = as_dtype(model, "bfloat16")
    assert next(b16.parameters()).dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32
    assert as_dtype(model, "bfloat16") is b16 and as_dtype(model, "float32") is model
    rows = generate_rows(
        b16,
        tok,
        ids,
        4 * torch.ones(4, model.config.hidden_size),
        [1, 2, 3, 4],
        layer=1,
        positions="last_prompt_and_generated",
        max_new_tokens=4,
        temperature=0.8,
        progress=False,
    )
    assert [n for _, n in rows] == [len(t) for t, _ in rows]
    conts = [t for t, _ in rows]
    nll = continuation_nll(model, tok, ids, conts, batch_size=3)
    for i in range(4):  # the reference: one unpadded forward per prompt
        if not conts[i]:
            assert math.isnan(nll[i])
            continue
        seq = torch.tensor([ids[i] + conts[i]])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=seq).logits[0, :-1].float(), -1)
        ref = -lp[torch.arange(len(ids[i]) - 1, seq.shape[1] - 1), seq[0, len(ids[i]) :]].mean()
        assert nll[i] == pytest.approx(float(ref), rel=1e-4)


# -------------------------------------------------------------------------------------- calibration
def _sweep_rows(effects: dict[float, float], ppl: dict[float, float], rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for p in range(12):
        for s in range(4):
            rows.append(
                {
                    "kind": "zero",
                    "method": "",
                    "alpha": 0.0,
                    "prompt_index": p,
                    "sample": s,
                    "score": rng.normal(0, 1),
                    "nll": 2.0,
                }
            )
            for a, e in effects.items():
                rows.append(
                    {
                        "kind": "v",
                        "method": "mean_diff_last",
                        "alpha": a,
                        "prompt_index": p,
                        "sample": s,
                        "score": rng.normal(e, 1),
                        "nll": 2.0 + math.log(ppl[a]),
                    }
                )
    return pd.DataFrame(rows)


def test_alpha_grid_and_choice() -> None:
    grid = K.alpha_grid(1.0, [0.1, 0.5], v_norm=10.0, h_norm=100.0)
    assert [g["alpha"] for g in grid] == [1.0, 5.0] and grid[0]["paper_setting"] and grid[0]["rel_norm"] == 0.1
    sweep = K.sweep_table(
        _sweep_rows({1.0: 0.1, 2.0: 1.6, 4.0: 3.0}, {1.0: 1.0, 2.0: 1.5, 4.0: 3.0}, np.random.default_rng(0)),
        n_boot=100,
        seed=0,
    )
    assert sweep.loc[sweep["alpha"] == 2.0, "ppl_ratio"].iloc[0] == pytest.approx(1.5)
    ch = K.choose_alpha(sweep, ["mean_diff_last"], target_d=1.0, max_ppl_ratio=2.0)
    assert ch.passed and ch.alpha == 2.0  # 4.0 is stronger but not fluent; 1.0 is fluent but weak
    fail = K.choose_alpha(sweep, ["mean_diff_last"], target_d=5.0, max_ppl_ratio=2.0)
    assert not fail.passed and fail.alpha == 2.0 and "no alpha of mean_diff_last reaches" in fail.reason
    # two readings: the qualifying point with the smaller ||alpha v|| / ||h|| wins, the paper's reading on ties
    other = sweep[sweep["method"] == "mean_diff_last"].assign(method="mean_diff_mean")
    sweep2 = pd.concat([sweep.assign(rel_norm=sweep["alpha"] / 10), other.assign(rel_norm=other["alpha"] / 20)])
    both = K.choose_alpha(sweep2, ["mean_diff_last", "mean_diff_mean"], target_d=1.0, max_ppl_ratio=2.0)
    assert both.method == "mean_diff_mean" and both.rel_norm == pytest.approx(0.1)
    tie = K.choose_alpha(
        sweep.assign(rel_norm=sweep["alpha"]), ["mean_diff_last", "mean_diff_mean"], target_d=1.0, max_ppl_ratio=2.0
    )
    assert tie.method == "mean_diff_last"


def test_design_from_pilot_recovers_sds_and_sizes_the_evaluation() -> None:
    rng = np.random.default_rng(1)
    n_stems, s_pilot, effect, sb, sw = 40, 6, 1.0, 0.15, 0.6
    rows = {"zero": [], "v": [], "pert": []}
    for p in range(n_stems):
        unit, inter = rng.normal(0, 2), rng.normal(0, sb)  # a stem effect shared by all, an interaction in v + u
        for s in range(s_pilot):
            rows["zero"].append({"prompt_index": p, "sample": s, "score": unit + rng.normal(0, sw)})
            rows["v"].append({"prompt_index": p, "sample": s, "score": unit + effect + rng.normal(0, sw)})
            rows["pert"].append({"prompt_index": p, "sample": s, "score": unit + effect + inter + rng.normal(0, sw)})
    z, v, x = (pd.DataFrame(rows[k]) for k in ("zero", "v", "pert"))
    des = K.design_from_pilot(z, v, x, n_eval_stems=32, delta=0.2, tost_alpha=0.05, power=0.8, s_min=1, s_max=64)
    assert des.effect == pytest.approx(effect, abs=0.15)
    # contrasts (x - z) - 0.8 (v - z) and 1.2 (v - z) - (x - z): within-stem SD sqrt(1 + 0.64 + 0.36) sw at most
    assert des.sd_within == pytest.approx(math.sqrt(1 + 1.44 + 0.04) * sw, rel=0.2)
    assert des.pilot_efficacy == pytest.approx(1.0, abs=0.15) and des.reached and des.design_power >= 0.8
    sd = math.sqrt(des.sd_between**2 + des.sd_within**2 / (des.samples - 1)) if des.samples > 1 else None
    if sd:
        from steerlimits.stats import effect_tost_power

        assert effect_tost_power(32, des.effect, sd) < 0.8  # the smallest sufficient s
    assert des.samples_needed == des.samples
    # a budget cap below what the power needs: the achieved power and the samples that would be needed
    capped = K.design_from_pilot(
        z, v, x, n_eval_stems=32, delta=0.2, tost_alpha=0.05, power=0.8, s_min=1, s_max=des.samples - 1
    )
    assert not capped.reached and capped.design_power < 0.8 and capped.samples == des.samples - 1
    assert capped.samples_needed == des.samples and f"needed: {des.samples} samples" in capped.note


# ------------------------------------------------------------------------------------- tables and claims
def _pool(shift: float, *, active: float = -1.0, n_stems: int = 16, samples: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    unit = rng.normal(0, 1, n_stems)
    noise = rng.normal(0, 0.5, (n_stems, samples))

    def add(
        kind: str,
        delta: float,
        family: str = "",
        seed_at_sample: bool = False,
        dim: int | None = None,
        experiment: str = "e1",
        **extra: object,
    ) -> None:
        for p in range(n_stems):
            for s in range(samples):
                if seed_at_sample and s > 0 and kind == "u":
                    continue
                rows.append(
                    {
                        "model": "m",
                        "trait": "t",
                        "experiment": experiment,
                        "kind": kind,
                        "family": family,
                        "seed": s if seed_at_sample else -1,
                        "alpha": 2.0,
                        "alpha_multiple": 1.0,
                        "environment": "",
                        "direction": -1,
                        "k": 0,
                        "draw": -1,
                        "prompt_set": "stems",
                        "prompt_index": p,
                        "sample": s,
                        "score": unit[p] + delta + noise[p, s],
                        "scorer": "syn",
                        "substitute_for": "x",
                        "subspace_dim": dim,
                        **extra,
                    }
                )

    add("zero", 0.0)
    add("v", shift)
    add("neg_v", -shift, family="neg_v")
    add("v+u", shift, family="random_orth", seed_at_sample=True, dim=23)  # identical to v: efficacy exactly 1
    add("v+u", shift, family="null_jac", seed_at_sample=True, dim=1)
    add("v+u", shift, family="null_cov", seed_at_sample=True, dim=5)
    add("v+u", shift + active, family="active", seed_at_sample=True, dim=10)
    add("u", 0.0, family="random_orth", seed_at_sample=True, dim=23)
    add("pca", shift, family="pca", experiment="e5")
    return pd.DataFrame(rows)


def test_paired_orthogonal_table_known_answers() -> None:
    t1 = T.orthogonal_test(_pool(1.0), T.Ctx(1, 300, 0.2)).set_index("condition")
    ro = t1.loc["v+u[random_orth]"]
    assert ro["n"] == 16 and ro["n_gen"] == 48 and ro["efficacy"] == pytest.approx(1.0)
    assert ro["effect"] == pytest.approx(1.0) and ro["margin"] == pytest.approx(0.2)
    assert ro["effect_tost_p"] < 1e-6 and ro["cohens_d"] == pytest.approx(0.0, abs=1e-12)
    act = t1.loc["v+u[active]"]
    assert act["efficacy"] == pytest.approx(0.0, abs=1e-12) and act["effect_tost_p"] > 0.5
    assert t1.loc["neg_v", "efficacy"] == pytest.approx(-1.0) and t1.loc["neg_v", "against"] == 1.0
    assert t1.loc["v", "against"] == 0.0 and t1.loc["v", "efficacy"] == 1.0
    pool = _pool(1.0)
    means = {k: pool[pool["kind"] == k].groupby("prompt_index")["score"].mean() for k in ("u", "v", "zero")}
    by_hand = (means["u"] - means["zero"]).mean() / (means["v"] - means["zero"]).mean()
    assert t1.loc["u[random_orth]", "n_gen"] == 16 and t1.loc["u[random_orth]", "efficacy"] == pytest.approx(by_hand)
    assert t1.loc["v+u[null_jac]", "subspace_dim"] == 1


def _tables(shift: float, active: float = -1.0) -> dict[str, pd.DataFrame]:
    pool = _pool(shift, active=active)
    ctx = T.Ctx(1, 200, 0.2)
    t1 = T.orthogonal_test(pool, ctx)
    t1["ppl_ratio"] = np.where(t1["condition"] == "v", 1.3, np.nan)
    empty = pd.DataFrame(
        columns=[
            "model",
            "trait",
            "condition",
            "seed",
            "alpha_multiple",
            "n",
            "n_gen",
            "n_ref",
            "cohens_d",
            "effect_tost_p",
            "efficacy",
            "eff_ci_low",
            "eff_ci_high",
            "d_ci_low",
            "d_ci_high",
            "ratio_to_random",
            "kl_ratio_to_random",
            "n_prefixes",
            "part",
            "draw",
            "family",
            "k",
        ]
    )
    t7 = pd.DataFrame(
        [
            {
                "model": "m",
                "layer": 15,
                "method": m,
                "threshold_rel_sigma1": 0.01,
                "null_fraction": nf,
                "effective_rank": 50,
                "d": 500,
                "n_samples": 2000,
                "participation_ratio": 3.0,
            }
            for m, nf in (
                ("covariance", 0.9),
                ("covariance_no_outliers", 0.5),
                ("jacobian", 0.1),
                ("jacobian_fisher", 0.85),
            )
        ]
    )
    t8 = pd.DataFrame(
        [
            {
                "model": "m",
                "trait": "t",
                "method": "mean_diff_last",
                "alpha": 2.0,
                "cohens_d": 1.1,
                "ppl_ratio": 1.3,
                "chosen": True,
                "paper_setting": False,
                "b0_calibration": True,
            },
            {
                "model": "m",
                "trait": "t",
                "method": "mean_diff_last",
                "alpha": 1.0,
                "cohens_d": 0.2,
                "ppl_ratio": 1.0,
                "chosen": False,
                "paper_setting": True,
                "b0_calibration": None,
            },
        ]
    )
    t9 = pd.DataFrame(
        [
            {
                "model": "m",
                "trait": "t",
                "estimator": "covariance lower half (low-variance tail)",
                "value": 0.8,
                "random_mean": 0.5,
                "random_lo": 0.4,
                "random_hi": 0.6,
            }
        ]
    )
    return {
        "t1": t1,
        "t2": empty,
        "t3": empty,
        "t4": empty,
        "t5": T.mean_diff_vs_pca(_pool(shift), ctx, {}),
        "t6": empty,
        "t7": t7,
        "t8": t8,
        "t9": t9,
    }


def _rows(tables: dict[str, pd.DataFrame], **kw: object) -> pd.DataFrame:
    rows = C.claims_rows(
        tables,
        steer_layers={"m": 15},
        delta=0.2,
        tost_alpha=0.05,
        target_d=1.0,
        max_ppl_ratio=2.0,
        cov_threshold=0.01,
        jac_threshold=0.01,
        **kw,
    )
    return pd.DataFrame([r.__dict__ for r in rows])


def _claims(shift: float, active: float = -1.0) -> pd.DataFrame:
    return _rows(_tables(shift, active))


def test_claims_known_answers_na_and_inconclusive() -> None:
    df = _claims(2.0).set_index("claim_id")
    assert df.loc["B0", "holds"] == "true" and "paper's setting alpha = 1" in df.loc["B0", "note"]
    assert df.loc["B1", "holds"] == "true"
    assert df.loc["B2-effect", "holds"] == "true" and df.loc["B2-paper", "holds"] == "true"
    assert "n = 16 stems (48 generations)" in df.loc["B2-effect", "note"] and "power" in df.loc["B2-effect", "note"]
    assert df.loc["B4", "holds"] == "true"  # efficacy 0 with the active family
    b3 = df.loc["B3-effect"].set_index("metric")["holds"].to_dict()
    assert b3 == {
        "t: v+u vs v, null_jac [effect TOST p]": "na",  # dim 1 < 2: no independent draws
        "t: v+u vs v, null_cov [effect TOST p]": "true",
    }
    assert "dim(null_jac subspace ∩ v⊥) = 1 < 2" in df.loc["B3-effect"].iloc[0]["note"]
    assert df.loc["B8-effect", "holds"] == "true"
    b10 = df.loc["B10"].set_index("metric")["holds"].tolist()
    assert b10 == ["true", "false", "false", "true"]
    # B11: 0.8 of ||v||^2 in the lower half, beyond the random 97.5 % quantile 0.6; B12: no stem against (16 stems)
    assert df.loc["B11", "value"] == 0.8 and df.loc["B11", "holds"] == "true"
    assert (
        df.loc["B12", "value"] == 0.0 and df.loc["B12", "holds"] == "true" and "p = 1.53e-05" in df.loc["B12", "note"]
    )
    assert C.sign_test_p(0.5, 16) > 0.05 and math.isnan(C.sign_test_p(0.1, 0))
    tables = _tables(2.0)
    tables["t9"] = tables["t9"].assign(value=0.55)  # inside the random range: B11 fails
    df = _rows(tables)
    assert df.loc[df["claim_id"] == "B11", "holds"].tolist() == ["false"]
    # no alpha qualified on the calibration stems: B0 fails for the pair even where the evaluation stems pass
    tables = _tables(2.0)
    tables["t8"] = tables["t8"].assign(b0_calibration=[False, None])
    b0 = _rows(tables).set_index("claim_id").loc["B0"]
    assert b0["holds"] == "false" and "no alpha qualified" in b0["note"]
    # the active control inert -> B4 false and the null-space rows inconclusive
    inert = _claims(2.0, active=0.0).set_index("claim_id")
    assert inert.loc["B4", "holds"] == "false"
    b3 = inert.loc["B3-effect"].set_index("metric")
    assert b3.loc["t: v+u vs v, null_cov [effect TOST p]", "holds"] == "inconclusive"
    assert "B4 failed" in b3.loc["t: v+u vs v, null_cov [effect TOST p]", "note"]
    # B0 fails on the evaluation stems (d < 1): every dependent row na, B10 unaffected
    weak = _claims(0.3).set_index("claim_id")
    assert weak.loc["B0", "holds"] == "false"
    dependent = weak.drop(index=["B0", "B10", "B11", "B12"])
    assert (dependent["holds"] == "na").all() and dependent["note"].str.contains("B0 failed").all()
    assert set(weak.loc["B10", "holds"]) == {"true", "false"}


# ------------------------------------------------------------------------------------ where v lives (B11)
def test_fraction_and_rayleigh_ratio_known_answers() -> None:
    d = 10
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))[0]
    x = 3 * q[:, 0] + 4 * q[:, 1]
    assert fraction(x, q[:, :1])[0] == pytest.approx(9 / 25) and fraction(x, q[:, 2:])[0] == pytest.approx(0.0)
    sv = np.sqrt(np.array([4.0, 1.0] + [0.0] * 8))
    assert rayleigh_ratio(q[:, 0], sv, q)[0] == pytest.approx(4.0 / 0.5)  # variance 4 vs mean eigenvalue 0.5
    rnd = np.random.default_rng(1).standard_normal((4000, d))
    assert fraction(rnd, q[:, :3]).mean() == pytest.approx(0.3, abs=0.02)  # dim / d for random directions
    assert rayleigh_ratio(rnd, sv, q).mean() == pytest.approx(1.0, abs=0.05)


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


def test_e4_offsets_norm_matched_and_other_trait_control(planted) -> None:
    v, bases = planted
    conds = plan_offsets(v, bases, ["random_orth", "null_jac", "active"], alpha=2.0, n_u=3, n_r=2, seed=1)
    assert [c["condition"] for c in conds].count("v+u") == 9 and [c["condition"] for c in conds].count("v+r") == 2
    for c in conds:
        if c["condition"] in ("v+u", "v+r"):
            assert float((c["offset"] / 2.0 - v).norm()) == pytest.approx(float(v.norm()), rel=1e-5)
    w = torch.randn(v.numel(), generator=torch.Generator().manual_seed(3), dtype=v.dtype) * 7.0
    other = [
        c
        for c in plan_offsets(v, bases, ["random_orth"], alpha=2.0, n_u=1, n_r=1, seed=1, others={"formality": w})
        if c["condition"] == "other"
    ]
    assert len(other) == 1 and float(other[0]["offset"].norm()) == pytest.approx(2.0 * float(v.norm()), rel=1e-6)


def test_e7_layers_and_streaming_covariance_singular_values() -> None:
    assert N.e7_layers(30, 15) == {7: "L/4", 15: "L/2", 22: "3L/4"}
    assert N.e7_layers(30, 16) == {7: "L/4", 15: "L/2", 16: "steer", 22: "3L/4"}
    x = torch.randn(500, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1000.0
    acc = N.CovAccumulator()
    for chunk in x.split(77):
        acc.add(chunk)
    sv, vecs = acc.decomposition()
    ref_sv, ref_vecs = ns.covariance_decomposition(x)  # singular values: sqrt of the covariance eigenvalues
    np.testing.assert_allclose(sv, ref_sv, rtol=1e-9)
    np.testing.assert_allclose(sv[0], 3.0, rtol=0.2)
    np.testing.assert_allclose(np.abs(vecs.T @ ref_vecs).diagonal(), 1.0, atol=1e-6)


def test_covariance_collection_excludes_first_position_and_outliers(tiny_llama) -> None:
    from steerlimits.hooks import add_vector

    model, tok = tiny_llama
    texts = ["one two three four", "the harbour at dawn", "a b", "some more words here please"]
    res = N.collect_covariances(
        model, tok, texts, [0, 2], min_tokens=10_000, steer_layer=2, batch_size=4, progress=False
    )
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    assert res.n_prompts == 4 and res.n_excluded == 4
    assert res.excluded[0].n == res.excluded[2].n == sum(lengths) - 4
    assert res.with_pos0.n == sum(lengths) and res.clean[2].n == res.excluded[2].n  # no outlier in a random model
    # plant a high-norm token in the residual read at layer 2 (steer block 1, last position): excluded by the rule
    big = torch.zeros(model.config.hidden_size)
    big[0] = 1e4
    with add_vector(model, 1, big, 1.0, positions="last_prompt_and_generated", prompt_length=max(lengths)):
        planted = N.collect_covariances(
            model, tok, texts, [2], min_tokens=10_000, steer_layer=2, batch_size=4, progress=False
        )
    assert planted.n_outliers[2] == 4 and planted.clean[2].n == planted.excluded[2].n - 4


@pytest.fixture(scope="module")
def tiny_gemma() -> tuple[torch.nn.Module, object]:
    from steerlimits.tiny import build_random_model

    return build_random_model(
        "gemma3_text", {"n_layers": 3, "d_model": 32, "n_heads": 4, "n_kv_heads": 1, "vocab_size": 300, "seed": 0}
    )


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


# ------------------------------------------------------------------------------------------------ figures
def test_f8_greys_only_panels_where_b0_fails_and_f9_marks_the_choice() -> None:
    from steerlimits.paperb.figures import f8_efficacy, f9_calibration

    rows = []
    for trait, d0 in (("sentiment", 1.3), ("formality", 0.2)):
        rows.append(
            {
                "model": "m",
                "trait": trait,
                "condition": "v",
                "seed": "",
                "family": "",
                "cohens_d": d0,
                "ppl_ratio": 1.2,
                "efficacy": 1.0,
                "eff_ci_low": 1.0,
                "eff_ci_high": 1.0,
            }
        )
        for fam in ("null_jac", "null_cov", "random_orth", "active"):
            rows.append(
                {
                    "model": "m",
                    "trait": trait,
                    "condition": f"v+u[{fam}]",
                    "seed": "pooled",
                    "family": fam,
                    "cohens_d": 0.0,
                    "ppl_ratio": np.nan,
                    "efficacy": 0.9,
                    "eff_ci_low": 0.8,
                    "eff_ci_high": 1.0,
                }
            )
    fig = f8_efficacy(pd.DataFrame(rows))
    by_title = {ax.get_title(): ax for ax in fig.axes}
    ok, bad = by_title["m · sentiment"], by_title["m · formality"]
    assert [t.get_text() for t in ok.texts] == []
    assert any("B0 fails" in t.get_text() and "0.20" in t.get_text() for t in bad.texts)
    assert bad.get_facecolor() != ok.get_facecolor()
    t8 = pd.DataFrame(
        [
            {
                "model": "m",
                "trait": tr,
                "method": "mean_diff_last",
                "alpha": a,
                "rel_norm": a / 10,
                "cohens_d": a / 2,
                "d_ci_low": a / 2 - 0.3,
                "d_ci_high": a / 2 + 0.3,
                "ppl_ratio": 1 + a / 4,
                "paper_setting": a == 1.0,
                "chosen": a == 2.0,
                "b0_calibration": tr == "sentiment",
            }
            for tr in ("sentiment", "formality")
            for a in (1.0, 2.0, 4.0)
        ]
    )
    fig9 = f9_calibration(t8)
    panels = {ax.get_title(): ax for ax in fig9.axes if ax.get_title()}
    assert any("no α" in t.get_text() for t in panels["m · formality"].texts)
    assert not panels["m · sentiment"].texts


def test_b13_reports_the_dtype_check() -> None:
    """B13 comes from the dtype check's condition v: p of the effect-relative TOST, true below 0.05, false above,
    na without an fp32 effect; absent when there is no dtype table."""

    def t10(p: float, effect: float) -> pd.DataFrame:
        base = {"model": "m", "trait": "t", "n": 32, "margin": 0.2 * effect, "identical_continuations": 0.1}
        return pd.DataFrame(
            [
                {**base, "condition": "v", "effect_tost_p": p, "effect_float32": effect, "mean_float32": 0.19},
                {**base, "condition": "alpha0", "effect_tost_p": 0.9, "effect_float32": effect, "mean_float32": -0.1},
            ]
        ).assign(mean_bfloat16=0.25)

    assert "B13" not in set(_claims(2.0)["claim_id"])
    for p, effect, want in ((0.01, 0.31, "true"), (0.534, 0.31, "false"), (0.01, 0.0, "na")):
        tables = {**_tables(2.0), "t10": t10(p, effect)}
        df = _rows(tables)
        b13 = df[df["claim_id"] == "B13"]
        assert len(b13) == 1 and b13["value"].iloc[0] == p and b13["holds"].iloc[0] == want
        assert "bf16 mean 0.25 vs fp32 0.19" in b13["note"].iloc[0]


def test_a_family_of_dimension_zero_reads_na_not_false() -> None:
    """A family whose subspace ∩ v⊥ is empty was skipped by the plan, so no table has its rows; the dimension the
    pool recorded makes its B3, B7 and B9 rows na, not "false: not computed", and keeps its B9 rows from
    vanishing when another family has combination rows."""
    tables = _tables(2.0)
    tables["t1"] = tables["t1"][tables["t1"]["condition"] != "v+u[null_jac]"]
    base = tables["t1"][tables["t1"]["condition"] == "v+u[null_cov]"].iloc[0]
    tables["t6"] = pd.DataFrame([base]).assign(part="b", draw=-1, family="null_cov", k=2)

    def jac_rows(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["metric"].str.contains("null_jac")].set_index("claim_id")

    blind = jac_rows(_rows(tables))
    assert set(blind["holds"]) == {"false"}  # without the dimensions: "not computed"
    assert not blind.index.str.startswith("B9").any()  # and B9 null_jac silently absent
    told = _rows(tables, family_dims={("m", "t"): {"null_jac": 0, "null_cov": 84}})
    jac = jac_rows(told)
    assert set(jac.loc[["B3-effect", "B3-paper", "B7", "B9-effect", "B9-paper"], "holds"]) == {"na"}
    assert jac["note"].str.contains("= 0").all()
    cov_b9 = told[told["claim_id"].str.startswith("B9") & told["metric"].str.contains("null_cov")]
    assert len(cov_b9) == 2 and (cov_b9["holds"] != "na").all()


def test_a_failed_control_voids_only_rows_that_would_hold() -> None:
    """With B4 failed (inert active family), a B3 row that would hold reads inconclusive (effect and paper rows
    alike); a B3 row that fails on its own data stays false."""
    tables = _tables(2.0, active=0.0)
    df = _rows(tables)
    b3 = df[(df["claim_id"].str.startswith("B3")) & df["metric"].str.contains("null_cov")].set_index("claim_id")
    assert set(b3["holds"]) == {"inconclusive"} and b3["note"].str.contains("B4 failed").all()
    t1 = tables["t1"].copy()
    moved = t1["condition"] == "v+u[null_cov]"
    t1.loc[moved, ["effect_tost_p", "cohens_d"]] = [0.9, 0.8]  # the null-space perturbation moved behaviour
    df = _rows({**tables, "t1": t1})
    b3 = df[(df["claim_id"].str.startswith("B3")) & df["metric"].str.contains("null_cov")].set_index("claim_id")
    assert set(b3["holds"]) == {"false"} and not b3["note"].str.contains("inconclusive").any()


def test_an_uncomputed_cell_fails_an_all_cells_row() -> None:
    """ "All equivalent" over several cells cannot hold with a cell whose d was not computed (NaN)."""
    tables = _tables(2.0)
    base = tables["t1"][tables["t1"]["condition"] == "v+u[random_orth]"].iloc[0]
    env = pd.DataFrame([base, base]).assign(seed="pooled", cohens_d=[0.05, float("nan")], effect_tost_p=[0.01, 0.01])
    b6 = _rows({**tables, "t3": env}).set_index("claim_id").loc["B6-paper"]
    assert b6["holds"] == "false" and math.isnan(b6["value"])
    env = env.assign(cohens_d=[0.05, 0.1])
    assert _rows({**tables, "t3": env}).set_index("claim_id").loc["B6-paper", "holds"] == "true"
