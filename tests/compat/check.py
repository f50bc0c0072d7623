#!/usr/bin/env python3
"""Checks the configuration corpus against the real dstack 0.22.5 parser.

Corpus: crates/model/tests/corpus/{valid,invalid,deviations,server}/NAME.yml.

- valid/NAME.yml: dstack accepts it and its normalized JSON equals valid/NAME.json
  (compared as parsed JSON, so 8 == 8.0, but true != 1). If dstack's server-side checks still
  refuse it, their message equals valid/NAME.server.err; otherwise that file does not exist.
- invalid/NAME.yml: dstack refuses it (ConfigurationError, ValidationError or YAML error).
- deviations/NAME.yml: the first line is `# dstack: accepts`, `# dstack: crashes` or
  `# dstack: rejects-differently`, and dstack behaves as that line says (valid, crash,
  invalid). These are the places where we deliberately differ from dstack.
- server/NAME.yml: dstack's parser accepts it and dstack's server-side checks refuse it with
  exactly the message in server/NAME.err (which our own checks must also produce).

Every disagreement is listed; the last line is `compat: N passed, M failed`; the exit status
is 1 when anything failed. `--write-json` (re)writes valid/NAME.json from dstack's output
instead of comparing, for new or changed cases.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oracle import judge, pretty  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "crates" / "model" / "tests" / "corpus"
CATEGORIES = ("valid", "invalid", "deviations", "server")
DEVIATION_VERDICTS = {
    "accepts": "valid",
    "crashes": "crash",
    "rejects-differently": "invalid",
}


def same_json(a, b) -> bool:
    """JSON equality with numbers compared by value, but booleans never equal to numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def json_diff(expected, actual, path="$"):
    """The first few places where two JSON values differ, for the failure report."""
    if same_json(expected, actual):
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in expected.keys() | actual.keys():
            if key not in actual:
                out.append(f"{path}.{key}: missing in dstack's output")
            elif key not in expected:
                out.append(f"{path}.{key}: not in the .json file (dstack: {json.dumps(actual[key])})")
            else:
                out.extend(json_diff(expected[key], actual[key], f"{path}.{key}"))
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        out = []
        for i, (x, y) in enumerate(zip(expected, actual)):
            out.extend(json_diff(x, y, f"{path}[{i}]"))
        return out
    return [f"{path}: the .json file has {json.dumps(expected)}, dstack gives {json.dumps(actual)}"]


def describe(result) -> str:
    if result["verdict"] == "valid":
        return "dstack accepts it"
    error = (result["error"] or "").strip().replace("\n", "\n      ")
    if len(error) > 1200:
        error = error[:1200] + " ..."
    what = "refuses" if result["verdict"] == "invalid" else "crashes on"
    return f"dstack {what} it:\n      {error}"


def server_problems(expected_path: Path, server_error, required: bool) -> list:
    """Compares dstack's server verdict with the expectation file (absent = accepted)."""
    expected = None
    if expected_path.exists():
        expected = expected_path.read_text(encoding="utf-8").rstrip("\n")
    if server_error is None:
        if required:
            return ["expected dstack's server to refuse it, but its checks accept it"]
        if expected is not None:
            return [f"{expected_path.name} says the server refuses it, but dstack's server accepts it"]
        return []
    if expected is None:
        return [f"dstack's server refuses it, but {expected_path.name} is missing:\n      {server_error}"]
    if expected != server_error:
        return [
            f"dstack's server message differs from {expected_path.name}:\n"
            f"      dstack: {server_error}\n      file:   {expected}"
        ]
    return []


def deviation_claim(path: Path):
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (IndexError, UnicodeDecodeError):
        return None
    prefix = "# dstack:"
    if not first.startswith(prefix):
        return None
    return first[len(prefix):].strip()


def check_file(category: str, path: Path, write_json: bool) -> list:
    """Problems with one corpus file; empty when it agrees with dstack."""
    result = judge(path)
    verdict = result["verdict"]
    if category == "valid":
        if verdict != "valid":
            return [f"expected dstack to accept it; {describe(result)}"]
        expected_path = path.with_suffix(".json")
        if write_json:
            text = pretty(result["json"])
            if not expected_path.exists() or expected_path.read_text(encoding="utf-8") != text:
                expected_path.write_text(text, encoding="utf-8")
                print(f"wrote {expected_path.relative_to(ROOT)}")
            return []
        if not expected_path.exists():
            return [f"{expected_path.name} is missing (run with --write-json to create it)"]
        try:
            expected = json.loads(expected_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            return [f"{expected_path.name} is not valid JSON: {e}"]
        return json_diff(expected, result["json"]) + server_problems(
            path.with_suffix(".server.err"), result["server_error"], required=False
        )
    if category == "invalid":
        if verdict != "invalid":
            return [f"expected dstack to refuse it; {describe(result)}"]
        return []
    if category == "server":
        if verdict != "valid":
            return [f"expected dstack's parser to accept it (the server refuses it); {describe(result)}"]
        return server_problems(path.with_suffix(".err"), result["server_error"], required=True)
    claim = deviation_claim(path)
    if claim not in DEVIATION_VERDICTS:
        return [
            "the first line must be `# dstack: accepts`, `# dstack: crashes` or "
            f"`# dstack: rejects-differently`, found {claim!r}"
        ]
    if verdict != DEVIATION_VERDICTS[claim]:
        return [f"the first line says `# dstack: {claim}`, but {describe(result)}"]
    return []


def stray_files() -> list:
    """Files the checks would silently skip: a typo in a name or a folder."""
    out = []
    for entry in sorted(CORPUS.iterdir()):
        if entry.is_dir() and entry.name not in CATEGORIES:
            out.append((entry, "unknown category folder"))
    for category in CATEGORIES:
        folder = CORPUS / category
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            name = entry.name
            if category == "valid" and name.endswith(".server.err"):
                source = entry.with_name(name.removesuffix(".server.err") + ".yml")
            elif entry.suffix in ({".json"} if category == "valid" else {".err"}):
                source = entry.with_suffix(".yml")
            elif entry.suffix == ".yml":
                continue
            else:
                out.append((entry, f"unexpected file in {category}/"))
                continue
            if not source.exists():
                out.append((entry, f"no matching {source.name}"))
    return out


def main(argv: list) -> int:
    write_json = "--write-json" in argv
    passed = 0
    failures = []
    for category in CATEGORIES:
        for path in sorted((CORPUS / category).glob("*.yml")):
            problems = check_file(category, path, write_json)
            if problems:
                failures.append((path, problems))
            else:
                passed += 1
    for path, why in stray_files():
        failures.append((path, [why]))
    if passed + len(failures) == 0:
        failures.append((CORPUS, ["the corpus is empty"]))
    for path, problems in failures:
        print(f"FAIL {path.relative_to(ROOT)}")
        for problem in problems:
            print(f"    {problem}")
    print(f"compat: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
