"""Every setting reaches its jobs: editing any leaf key of the config schemas re-plans exactly the jobs that read it.

For every leaf key of ``workflow/schemas/*.schema.yaml`` (generated from the schemas by :mod:`rerun_keys`, not
hand-picked), the smoke config gets a changed valid value and the finished smoke run is planned again (a dry run,
:mod:`dag_plan`). The plan must satisfy, job by job:

* a job whose stage settings changed (:func:`steerlimits.settings.params`, what the rule passes as params) is
  planned, for that reason ("params changed"): no result is left stale;
* a planned job is justified: its params changed, it is new, its input files changed, or an input is rewritten by
  another planned job; nothing else re-runs;
* section invariants written by hand (not derived from the settings): a ``paperA`` key re-plans no paper B job and
  vice versa, a ``scorers`` key directly re-runs only ``validate_scorers``, a key of one model directly re-runs
  only that model's jobs and the aggregators;
* every key re-plans at least one job, unless :data:`EXEMPT` lists it with a reason.

Merely re-ordering the keys of every YAML mapping re-plans nothing.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rerun_keys import candidates, leaves, set_key
from smoke_workdir import ROOT, SMOKE, SNAKEFILE

from steerlimits.settings import params, validate_config

#: Keys that intentionally re-plan nothing on the smoke config, with the reason.
#: Jobs that record the whole run (every config key): never counted as a key's readers.
RUN_RECORDS = ("all", "manifest")

EXEMPT: dict[str, str] = {
    "models.*.hub_id": "read only for source 'hub'; the smoke models are random-init (source 'random')",
    "models.*.n_layers": "for source 'random' the depth is random.n_layers (n_layers is for hub models)",
    "models.*.d_model": "for source 'random' the width is random.d_model (d_model is for hub models)",
}

#: Keys whose generic change is invalid on its own: the override builds a valid config that changes the key.
OVERRIDES: dict[str, Any] = {
    # empty maps in the smoke config: add one entry (model -> vector -> value)
    "paperA.alpha_overrides.<new>.<new>": lambda cfg, key: set_key(cfg, key[:-2], {"tiny-llama": {"refusal": -2.0}}),
    "paperA.layers.<new>.<new>": lambda cfg, key: set_key(cfg, key[:-2], {"tiny-llama": {"refusal": 1}}),
    # the fp32 / bf16 check names one paper B pair: move it to the other smoke model / trait
    "paperB.dtype_check.model": lambda cfg, key: set_key(cfg, key, "tiny-llama"),  # the default is tiny-gemma3
    "paperB.dtype_check.trait": lambda cfg, key: set_key(cfg, key, "formality"),
    "models.*.source": lambda cfg, key: set_key(
        set_key(set_key(set_key(cfg, key, "hub"), (*key[:-1], "hub_id"), "org/tiny"), (*key[:-1], "n_layers"), 4),
        (*key[:-1], "d_model"),
        64,
    ),
}

#: Hand-written invariants on the directly re-run rules (params changed) of a key prefix.
DIRECT_ONLY: dict[str, tuple[str, ...]] = {
    "paperA.*": ("paperA_",),
    "paperB.*": ("paperB_",),
    "scorers.*": ("validate_scorers",),
    "steering.dose_response.scorer.*": (
        "score_generations",
        "paperA_behaviour",
        "paperB_score",
        "paperB_calibrate",
        "paperB_dtype_check",
    ),
    "steering.dose_response.*": ("steer_generate", "score_generations", "dose_response"),
    "vectors.max_pairs": ("extract_vectors",),
    "vectors.batch_size": ("extract_vectors",),
}
#: A key under the first prefix never re-plans (directly or downstream) a job of the rules named second.
NEVER: dict[str, tuple[str, ...]] = {"paperA.*": ("paperB_",), "paperB.*": ("paperA_",)}


def _match(key: str, pattern: str) -> bool:
    """Segment-wise: ``*`` is one segment; a trailing ``.*`` matches everything below (``paperA.*``)."""
    ks, ps = key.split("."), pattern.split(".")
    if ps[-1] == "*" and len(ps) > 1 and not any("*" in p for p in ps[:-1]):
        return ks[: len(ps) - 1] == ps[:-1] and len(ks) >= len(ps)
    return len(ks) == len(ps) and all(fnmatch.fnmatchcase(k, p) for k, p in zip(ks, ps, strict=False))


def _first(table: dict[str, Any], key: str) -> Any:
    return next((v for p, v in table.items() if _match(key, p)), None)


def _job_id(job: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return job["rule"], tuple(sorted(job["wildcards"].items()))


def _mutations(base: dict[str, Any], scratch: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(dotted key, changed validated config)`` for every leaf key; a map entry's schema is tested once (on the
    config's first entry), since all entries share it. ``data_dir`` moves to a copy of the data in ``scratch``."""
    import shutil

    data_copy = scratch / "data"
    shutil.copytree(ROOT / "data", data_copy)
    context = {"models": list(base["models"]), "behaviours": base["vectors"]["behaviours"]}
    out, seen = [], set()
    for key, node in leaves(base):
        generic = ".".join("*" if i == 1 and key[0] == "models" else k for i, k in enumerate(key))
        if generic in seen:
            continue
        seen.add(generic)
        old: Any = base
        try:
            for part in key:
                old = old[part]
        except (KeyError, TypeError):
            old = None
        override = _first(OVERRIDES, ".".join(key))
        if key == ("data_dir",):
            tries = [set_key(base, key, str(data_copy))]
        elif override:
            tries = [override(base, key)]
        else:
            tries = [set_key(base, key, c) for c in candidates(node, old, context)]
        for cfg in tries:
            try:
                out.append((".".join(key), validate_config(cfg)))
                break
            except Exception:  # noqa: BLE001, S112 - the next candidate value
                continue
        else:
            raise AssertionError(f"no valid changed value for config key {'.'.join(key)} (add an override)")
    return out


def _plans(workdir: Path, configs: list[Path]) -> dict[str, dict[str, Any]]:
    """Dry-run plans of ``configs``, in two processes (two cores)."""
    half = (len(configs) + 1) // 2
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("dag_plan.py")),
                str(workdir),
                str(SNAKEFILE),
                *map(str, chunk),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for chunk in (configs[:half], configs[half:])
        if chunk
    ]
    plans = {}
    for p in procs:
        out, _ = p.communicate(timeout=1800)
        for line in out.splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                plans[rec["config"]] = rec
    return plans


def _stage_params(cfg: dict[str, Any], job: dict[str, Any]) -> Any:
    return None if job["rule"] == "all" else params(cfg, job["rule"], **job["wildcards"])


@pytest.fixture(scope="module")
def rerun(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The plans, made once per pytest run: under pytest-xdist the first worker that needs them makes them and the
    other loads them (from the run's shared temporary folder), instead of planning every config twice."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _rerun(smoke_run, tmp_path_factory.mktemp("configs"))
    shared = tmp_path_factory.getbasetemp().parent  # pytest-<n>/, one per run, above every worker's folder
    with open(shared / "rerun.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = shared / "rerun.pickle"
        if not made.exists():
            folder = shared / "rerun_configs"
            folder.mkdir()
            made.write_bytes(pickle.dumps(_rerun(smoke_run, folder)))
        return pickle.loads(made.read_bytes())


def _rerun(smoke_run: Path, folder: Path) -> dict[str, Any]:
    base = validate_config(yaml.safe_load(SMOKE.read_text()))
    muts = _mutations(base, folder)
    files = {}
    for i, (key, cfg) in enumerate(muts):
        files[key] = folder / f"{i:03d}.yaml"
        files[key].write_text(yaml.safe_dump(cfg, sort_keys=False))
    reordered = folder / "reordered.yaml"

    def reverse(x: Any) -> Any:
        return {k: reverse(x[k]) for k in reversed(list(x))} if isinstance(x, dict) else x

    reordered.write_text(yaml.safe_dump(reverse(yaml.safe_load(SMOKE.read_text())), sort_keys=False))
    plans = _plans(smoke_run, [SMOKE, reordered, *files.values()])
    return {
        "base": base,
        "mutations": dict(muts),
        "files": files,
        "plans": plans,
        "smoke": str(SMOKE),
        "reordered": str(reordered),
    }


def test_the_finished_smoke_run_and_a_reordered_config_plan_nothing(rerun: dict[str, Any]) -> None:
    for cfg in (rerun["smoke"], rerun["reordered"]):
        plan = rerun["plans"][cfg]
        assert "error" not in plan, plan.get("error")
        assert not [j for j in plan["jobs"] if j["needrun"]], f"{cfg}: jobs planned without any change"


def test_every_config_key_replans_exactly_the_jobs_that_read_it(rerun: dict[str, Any]) -> None:
    base_jobs = {_job_id(j): j for j in rerun["plans"][rerun["smoke"]]["jobs"]}
    problems: list[str] = []
    checked = exempt = 0
    for key, cfg in rerun["mutations"].items():
        plan = rerun["plans"][str(rerun["files"][key])]
        if "error" in plan:
            problems.append(f"{key}: the changed config does not plan: {plan['error'][:300]}")
            continue
        # `manifest` records the whole config and its hash (MANIFEST.json), so every edit rewrites it by design; it is
        # checked in the first test (an unchanged or reordered config plans nothing, the manifest included)
        jobs = [j for j in plan["jobs"] if j["rule"] not in RUN_RECORDS]
        planned = {_job_id(j): j for j in jobs if j["needrun"]}
        direct = set()
        for jid, job in ((_job_id(j), j) for j in jobs):
            old = base_jobs.get(jid)
            changed = old is not None and _stage_params(rerun["base"], old) != _stage_params(cfg, job)
            if changed:
                direct.add(jid)
                if jid not in planned:
                    problems.append(f"{key}: {jid} reads the key (its settings changed) but is not re-planned")
        for jid, job in planned.items():
            r, old = job["reason"], base_jobs.get(jid)
            new = old is None or old["output"] != job["output"]
            inputs_changed = old is not None and old["input"] != job["input"]
            if r["code_changed"] or r["software_stack_changed"] or r["forced"] or r["incomplete_output"]:
                problems.append(f"{key}: {jid} planned for a reason other than the config: {r}")
            if not (
                jid in direct
                or (new and r["missing_output"])
                or (inputs_changed and (r["input_changed"] or r["updated_input"]))
                or r["updated_input"]
            ):
                problems.append(f"{key}: {jid} planned without a reason that follows from the change: {r}")
        rules_direct = {jid[0] for jid in direct}
        allowed = _first(DIRECT_ONLY, key)
        if allowed and not all(rule.startswith(allowed) for rule in rules_direct):
            problems.append(f"{key}: directly re-runs {sorted(rules_direct)}, allowed only {allowed}")
        never = _first(NEVER, key)
        if never and any(jid[0].startswith(never) for jid in planned):
            problems.append(f"{key}: re-plans jobs of {never}: {sorted(j for j in planned if j[0].startswith(never))}")
        if key.startswith("models."):
            model = key.split(".")[1]
            foreign = [jid for jid in direct if dict(jid[1]).get("model", model) != model]
            if foreign:
                problems.append(f"{key}: a setting of model {model} re-runs other models' jobs {foreign}")
        exempt_reason = _first(EXEMPT, key)
        if exempt_reason:
            exempt += 1
            if planned:
                problems.append(f"{key}: listed as triggering nothing ({exempt_reason}) but plans {sorted(planned)}")
        else:
            checked += 1
            if not planned:
                problems.append(
                    f"{key}: changing it re-plans no job (a setting nobody reads?); read it or list it "
                    "in EXEMPT with the reason"
                )
    print(f"schema-driven rerun test: {checked} keys checked, {exempt} keys exempted")
    assert not problems, "\n".join(problems)
    assert checked >= 100  # the schemas have well over a hundred leaf keys
