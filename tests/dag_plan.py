"""Plan the workflow (a dry run, in process) for many configs at once; print each plan as JSON.

Usage: ``python tests/dag_plan.py WORKDIR SNAKEFILE CONFIG [CONFIG ...]``. One JSON object per config and line:
``{"config": path, "jobs": [{"rule", "wildcards", "needrun", "reason": {...}, "input": [...]}, ...]}`` or
``{"config": path, "error": message}``. Building the DAG in one process (about 1 s per config) instead of one
``snakemake -n`` per config (about 3 s) is what makes a test over every config key affordable. It uses
Snakemake's API and, for the plan itself, two internal calls of Snakemake 9 (``_prepare_dag``, ``_build_dag``);
the version is pinned in envs/requirements.txt.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def plan(workdir: Path, snakefile: Path, config: Path) -> dict:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
        StorageSettings,
    )

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, dryrun=True)) as api:
            wf = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(configfiles=[config]),
                storage_settings=StorageSettings(),
                workdir=workdir,
                snakefile=snakefile,
            )
            wf.dag(dag_settings=DAGSettings())
            w = wf._workflow
            w._prepare_dag(forceall=False, ignore_incomplete=False, lock_warn_only=True, nolock=True)
            w._build_dag()
            dag = w.dag
            needrun = set(dag.needrun_jobs())
            jobs = []
            for job in dag.jobs:
                r = dag.reason(job)
                jobs.append(
                    {
                        "rule": job.rule.name,
                        "wildcards": dict(job.wildcards_dict),
                        "needrun": job in needrun,
                        "input": sorted(map(str, job.input)),
                        "output": sorted(map(str, job.output)),
                        "reason": {
                            "params_changed": bool(r.params_changed),
                            "missing_output": bool(r.missing_output),
                            "input_changed": bool(r.input_changed),
                            "code_changed": bool(r.code_changed),
                            "updated_input": sorted(map(str, r.updated_input | r.updated_input_run)),
                            "software_stack_changed": bool(r.software_stack_changed),
                            "forced": bool(r.forced),
                            "incomplete_output": bool(r.incomplete_output),
                        },
                    }
                )
            return {"config": str(config), "jobs": jobs}
    except Exception as err:  # noqa: BLE001 - reported to the test, which names the config
        return {"config": str(config), "error": f"{type(err).__name__}: {err}"}
    finally:
        os.chdir(cwd)


def main(argv: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir, snakefile, *configs = argv
    for cfg in configs:
        print(json.dumps(plan(Path(workdir), Path(snakefile), Path(cfg))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
