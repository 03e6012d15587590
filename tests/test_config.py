"""Bad configs are refused before any job, with a message naming the key."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from steerlimits.settings import ConfigError, check_config, load_config
from steerlimits.settings.core import layer_of

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")


def _load(name: str) -> dict:
    return load_config(ROOT / "config" / name)


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    check_config(_load(name))


def test_middle_layer_is_L_over_2() -> None:
    cfg = _load("default.yaml")
    assert layer_of(cfg, "smollm2-135m") == 15 and layer_of(cfg, "qwen2.5-coder-0.5b") == 12
    assert layer_of(cfg, "gemma3-270m") == 9


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c.update(bogus_key=1), "bogus_key"),
        (lambda c: c["steering"]["dose_response"].update(n_generations=-3), "n_generations"),
        (lambda c: c["scorers"].update(validate=["sentiment", "telepathy"]), "telepathy"),
        (lambda c: c["models"]["smollm2-135m"].update(colour="red"), "colour"),
    ],
)
def test_schema_refuses_and_names_key(mutate, needle: str) -> None:
    cfg = yaml.safe_load((ROOT / "config/default.yaml").read_text())
    mutate(cfg)
    with pytest.raises(Exception) as err:
        validate(cfg, SCHEMA)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c["models"]["smollm2-135m"].update(layer=30), "models.smollm2-135m.layer = 30"),
        (lambda c: c.update(layer=99), "layer = 99"),
        (lambda c: c["models"].update({"mystery-7b": {"source": "pypi-gguf"}}), "models.mystery-7b"),
        (lambda c: c["steering"]["dose_response"]["scorer"].update(sentiment="vibes"), "scorer.sentiment"),
        (lambda c: c["steering"]["dose_response"].update(alphas=[1, 2]), "alphas"),
    ],
)
def test_check_config_refuses_and_names_key(mutate, needle: str) -> None:
    cfg = _load("default.yaml")
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("scorer", "ok"),
    [
        ("hf:facebook/bart-large-mnli:politeness", True),
        ("hf:cardiffnlp/twitter-roberta-base-sentiment-latest", True),
        ("hf:facebook/bart-large-mnli:", False),
        ("hf:no-slash", False),
    ],
)
def test_hub_scorer_names_with_trait_suffix(scorer: str, ok: bool) -> None:
    cfg = _load("default.yaml")
    cfg["steering"]["dose_response"]["scorer"]["sentiment"] = scorer
    if ok:
        check_config(cfg)
    else:
        with pytest.raises(ConfigError, match="scorer.sentiment"):
            check_config(cfg)


def _snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    return subprocess.run([str(exe), "--cores", "1", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_workflow_refuses_bad_config_before_any_job(tmp_path: Path) -> None:
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    cfg["models"]["tiny-llama"]["layer"] = 17
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = _snakemake(
        "-n", "--configfile", str(bad), "--directory", str(tmp_path), "--snakefile", str(ROOT / "Snakefile"), cwd=ROOT
    )
    assert res.returncode != 0
    assert "models.tiny-llama.layer = 17" in res.stdout + res.stderr


def test_hub_config_plans_offline_but_refuses_to_run(tmp_path: Path) -> None:
    """paper.yaml: a dry run plans the DAG; a real run stops in seconds, naming the hub id, before any job."""
    plan = _snakemake(
        "-n",
        "--configfile",
        "config/paper.yaml",
        "--directory",
        str(tmp_path),
        "--snakefile",
        str(ROOT / "Snakefile"),
        cwd=ROOT,
    )
    assert plan.returncode == 0, plan.stderr[-2000:]
    t = time.time()
    run = _snakemake(
        "--configfile",
        str(ROOT / "config/paper.yaml"),
        "--directory",
        str(tmp_path),
        "--snakefile",
        str(ROOT / "Snakefile"),
        cwd=ROOT,
    )
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "meta-llama/Llama-3.2-1B-Instruct" in out and "HF_HUB_OFFLINE" in out
    assert time.time() - t < 60
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))
