#!/usr/bin/env python3
"""dstack 0.22.5's own job configurators on the configuration corpus: the oracle for
`dstack_decide::jobspec`.

For every `crates/model/tests/corpus/valid/NAME.yml` that is a run configuration (and that
dstack's server accepts, i.e. has no NAME.server.err), this builds the run spec the CLI sends
for `dstack apply --no-repo` (run name = `name`, no profile, no repo), applies the server's
defaults (`validate_run_spec_and_set_defaults`) and computes the job specs `runs/get_plan`
shows (`get_job_specs_from_run_spec`, replica 0 of every replica group), in-process, with
no server or database. The result is

    {"effective_run_spec": ..., "job_specs": [...]}   or   {"error": "..."}

Two things that dstack reads from its environment are fixed, as in `tests/it/jobspec_corpus.rs`:
- the default Python of the base image's venv is 3.11 (dstack uses the server's Python);
- every custom image's registry configuration is FAKE_IMAGE below (no registry is asked).

Usage: oracle.py [--write | --check] [NAME...]
  --check (default): compare with the committed crates/decide/tests/jobspec_corpus/NAME.json
  --write: (re)write those files
Ends with `jobspec-oracle: N files checked, M differ`.
"""

import asyncio
import json
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "crates/model/tests/corpus/valid"
EXPECTED = ROOT / "crates/decide/tests/jobspec_corpus"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJobspecOracleKey oracle"

# The import order matters (dstack's server modules import each other in a cycle).
from dstack._internal.server.services.runs import spec as runs_spec  # noqa: E402  isort: skip
import gpuhunt  # noqa: E402
from dstack._internal.core.models.configurations import parse_apply_configuration  # noqa: E402
from dstack._internal.core.models.runs import RunSpec  # noqa: E402
from dstack._internal.server.services import jobs as jobs_services  # noqa: E402
from dstack._internal.server.services.docker import ImageConfig  # noqa: E402
from dstack._internal.server.services.jobs.configurators import base as configurators_base  # noqa: E402

FAKE_IMAGE = ImageConfig(User="1000:1000", Entrypoint=["/entrypoint.sh"], Cmd=["serve"])
FAKE_ARCHS = {gpuhunt.CPUArchitecture.X86}

configurators_base.get_default_python_verison = lambda: "3.11"
configurators_base._get_image_config_and_cpu_architectures = lambda image, auth: (FAKE_IMAGE, set(FAKE_ARCHS))


async def plan_job_specs(run_spec: RunSpec, secrets: dict) -> list:
    run_name = run_spec.run_name
    if run_name is None:
        run_spec.run_name = "dry-run"
    try:
        if run_spec.configuration.type == "service":
            names = [g.name for g in run_spec.configuration.replica_groups]
        else:
            names = [None]
        specs = []
        for name in names:
            specs += await jobs_services.get_job_specs_from_run_spec(
                run_spec=run_spec, secrets=secrets, replica_num=0, replica_group_name=name
            )
        return specs
    finally:
        run_spec.run_name = run_name


def _without_ssh_key(spec):
    # As the API shows job specs (`remove_job_spec_sensitive_info`); the key is random.
    spec.ssh_key = None
    return spec


def compute(path: Path):
    conf = parse_apply_configuration(yaml.safe_load(path.read_text(encoding="utf-8")))
    if conf.type not in ("dev-environment", "task", "service"):
        return None
    run_spec = RunSpec(run_name=conf.name, configuration=conf, profile=None)
    # The registry lookup interpolates secrets into `registry_auth`; the project has them.
    auth = conf.registry_auth
    names = re.findall(r"\$\{\{\s*secrets\.(\w+)\s*\}\}", f"{auth.username} {auth.password}") if auth else []
    try:
        runs_spec.validate_run_spec_and_set_defaults(SimpleNamespace(ssh_public_key=SSH_KEY), run_spec)
        specs = asyncio.run(plan_job_specs(run_spec, {n: "secret" for n in names}))
    except Exception as e:  # noqa: BLE001 - the error is the answer
        return {"error": f"{type(e).__name__}: {e}"}
    return {
        "effective_run_spec": json.loads(run_spec.model_dump_json()),
        "job_specs": [json.loads(_without_ssh_key(s).model_dump_json()) for s in specs],
    }


def main(argv: list) -> int:
    logging.getLogger("dstack").setLevel(logging.ERROR)  # parser warnings are tests/compat's
    write = "--write" in argv
    names = [a for a in argv if not a.startswith("--")]
    paths = sorted(CORPUS.glob("*.yml")) if not names else [CORPUS / f"{n}.yml" for n in names]
    checked = differ = 0
    for path in paths:
        if path.with_suffix(".server.err").exists():
            continue
        result = compute(path)
        if result is None:
            continue
        text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
        target = EXPECTED / f"{path.stem}.json"
        checked += 1
        if write:
            EXPECTED.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")
                print(f"wrote {target.relative_to(ROOT)}")
        elif not target.exists() or json.loads(target.read_text(encoding="utf-8")) != result:
            differ += 1
            print(f"DIFFERS: {target.relative_to(ROOT)} is not what dstack computes (run with --write)")
    print(f"jobspec-oracle: {checked} files checked, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
