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

With `--write-json`, the JSON of every valid file is also written next to it as NAME.json
(pretty-printed, 2-space indent, keys in dstack's order).
"""

import json
import logging
import sys
from pathlib import Path

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


def judge(path: Path) -> dict:
    result = {"file": str(path), "verdict": None, "json": None, "error": None, "warnings": []}
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
