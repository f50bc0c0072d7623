#!/usr/bin/env python3
"""Runs dstack 0.22.5's own configuration parser on files: the oracle for our parser.

For each file given on the command line, prints one JSON line:

    {"file": PATH, "verdict": "valid" | "invalid" | "crash", "json": ..., "error": ...,
     "warnings": [...]}

- valid: `parse_apply_configuration(yaml.safe_load(text))` succeeded; `json` is
  `json.loads(conf.model_dump_json())`, the normalized JSON dstack sends to its server.
- invalid: dstack refused the file with a ConfigurationError, a pydantic ValidationError or
  a YAML error; `error` is the message the user would see.
- crash: any other exception (a dstack bug such as the TypeError for `ports: ["8080:"]`);
  `error` is `ExceptionType: message`.

`warnings` holds what dstack logged at WARNING or above while parsing (for example the
deprecated `tpu-` GPU prefix).

`server_error` (valid files only) is what dstack's server says when it validates the spec at
plan time, or null when it accepts it. Only the server's stateless checks run: the ones in
`validate_run_spec_and_set_defaults`, the RunSpec model rules, the gateway-less service checks
(for `gateway: false`), `_validate_fleet_spec_and_set_defaults`,
`_validate_gateway_configuration` and `_validate_volume_configuration`. Two things are set up
as a real installation would have them: the CLI reads `identity_file` into `ssh_key` before
the server sees a fleet (key contents are not judged here), and the backend feature lists are
those of a server with every backend's dependencies installed.

With `--write-json`, the JSON of every valid file is also written next to it as NAME.json
(pretty-printed, 2-space indent, keys in dstack's order).
"""

import json
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml
from pydantic import ValidationError

from dstack._internal.core.errors import ConfigurationError
from dstack._internal.core.models.configurations import parse_apply_configuration


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _backends_with(feature: str) -> list:
    """Backends whose compute class has `feature`, in dstack's configurator order, as a server
    with every backend's dependencies installed lists them (importing the classes needs those
    dependencies, so their sources are read instead)."""
    import dstack._internal.core.backends as backends_pkg
    from dstack._internal.core.models.backends.base import BackendType

    root = Path(backends_pkg.__file__).parent
    order = re.findall(r"backends\.(\w+)\.configurator", (root / "configurators.py").read_text())
    out = []
    for name in order:
        compute = root / name / "compute.py"
        if name == "base" or not compute.exists():
            continue
        if re.search(rf"class \w+\([^)]*\b{feature}\b", compute.read_text(), re.S):
            try:
                out.append(BackendType(name))
            except ValueError:
                continue
    return out


_server = None


def _server_checks():
    """dstack's stateless server-side checks, imported once (needs `dstack[server]`)."""
    global _server
    if _server is None:
        # The import order matters: dstack's server modules import each other in a cycle that
        # only resolves when the run spec module comes first.
        from dstack._internal.server.services.runs import spec as runs_spec  # isort: skip
        from dstack._internal.core.backends import features
        from dstack._internal.server.services import fleets, gateways, volumes
        from dstack._internal.server.services.services import _assign_service_to_in_server_proxy

        gateway_backends = _backends_with("ComputeWithGatewaySupport")
        private_gateway_backends = _backends_with("ComputeWithPrivateGatewaySupport")
        volume_backends = _backends_with("ComputeWithVolumeSupport")
        for module in (features, gateways):
            module.BACKENDS_WITH_GATEWAY_SUPPORT = gateway_backends
            module.BACKENDS_WITH_PRIVATE_GATEWAY_SUPPORT = private_gateway_backends
        for module in (features, volumes):
            module.BACKENDS_WITH_VOLUMES_SUPPORT = volume_backends
        gateways.check_backend_type_available = lambda backend: None
        volumes.backends_services.check_backend_type_available = lambda backend: None
        fleets._validate_ssh_key = lambda key: None
        _server = SimpleNamespace(
            fleets=fleets,
            gateways=gateways,
            volumes=volumes,
            runs_spec=runs_spec,
            in_server_proxy=_assign_service_to_in_server_proxy,
        )
    return _server


def server_error(conf):
    """The message of the first server-side rule `conf` breaks, or None."""
    from dstack._internal.core.errors import ServerClientError
    from dstack._internal.core.models.configurations import ServiceConfiguration
    from dstack._internal.core.models.fleets import (
        FleetConfiguration,
        FleetSpec,
        SSHHostParams,
        SSHKey,
    )
    from dstack._internal.core.models.gateways import GatewayConfiguration
    from dstack._internal.core.models.profiles import Profile
    from dstack._internal.core.models.runs import RunSpec

    server = _server_checks()
    try:
        if isinstance(conf, FleetConfiguration):
            conf = conf.model_copy(deep=True)
            ssh = conf.ssh_config
            if ssh is not None:
                if ssh.identity_file is not None and ssh.ssh_key is None:
                    ssh.ssh_key = SSHKey(public="", private="")
                for host in ssh.hosts:
                    if isinstance(host, SSHHostParams) and host.identity_file is not None and host.ssh_key is None:
                        host.ssh_key = SSHKey(public="", private="")
            spec = FleetSpec(configuration=conf, profile=Profile(name="default"))
            server.fleets._validate_fleet_spec_and_set_defaults(spec)
        elif isinstance(conf, GatewayConfiguration):
            server.gateways._validate_gateway_configuration(conf)
        elif conf.type == "volume":
            server.volumes._validate_volume_configuration(conf)
        elif conf.type in ("dev-environment", "task", "service"):
            run_spec = RunSpec(run_name=conf.name, configuration=conf, profile=None, ssh_key_pub="ssh-ed25519 AAAA")
            server.runs_spec.validate_run_spec_and_set_defaults(SimpleNamespace(ssh_public_key="x"), run_spec)
            if isinstance(conf, ServiceConfiguration) and conf.gateway is False:
                run = SimpleNamespace(project=SimpleNamespace(name="main"), run_name="run")
                try:
                    server.in_server_proxy(None, run, run_spec)
                except ServerClientError:
                    raise
                except Exception:  # noqa: BLE001 - past the checks, into code that needs a database
                    pass
        return None
    except ServerClientError as e:
        return str(e)
    except ValidationError as e:
        # RunSpec's own model rules (such as Dynamo with retry): the bare messages.
        return "\n".join(err["msg"].removeprefix("Value error, ") for err in e.errors())


def judge(path: Path) -> dict:
    result = {
        "file": str(path),
        "verdict": None,
        "json": None,
        "error": None,
        "warnings": [],
        "server_error": None,
    }
    collect = _Collect()
    dstack_logger = logging.getLogger("dstack")
    saved = (dstack_logger.handlers[:], dstack_logger.propagate)
    dstack_logger.handlers[:] = [collect]
    dstack_logger.propagate = False
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        conf = parse_apply_configuration(data)
        result["json"] = json.loads(conf.model_dump_json())
        result["verdict"] = "valid"
        result["server_error"] = server_error(conf)
    except (ConfigurationError, ValidationError, yaml.YAMLError) as e:
        result["verdict"] = "invalid"
        result["error"] = str(e)
    except Exception as e:  # noqa: BLE001 - anything else is a dstack crash.
        result["verdict"] = "crash"
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        dstack_logger.handlers[:], dstack_logger.propagate = saved
        result["warnings"] = collect.messages
    return result


def pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def main(argv: list) -> int:
    write_json = False
    files = []
    for arg in argv:
        if arg == "--write-json":
            write_json = True
        else:
            files.append(Path(arg))
    if not files:
        print("usage: oracle.py [--write-json] FILE.yml...", file=sys.stderr)
        return 2
    for path in files:
        result = judge(path)
        if write_json and result["verdict"] == "valid":
            path.with_suffix(".json").write_text(pretty(result["json"]), encoding="utf-8")
        print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
