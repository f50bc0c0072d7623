#!/usr/bin/env python3
"""Validates JSON that dstack-api serialized with dstack 0.22.5's own pydantic models.

Usage: python check_models.py CASES.json, where CASES.json is [{"model", "file", "name"}]
(written by crates/api/tests/runs.rs::real_models_accept_our_json). Each file is validated
with the named model (client models for responses, server schemas for requests), and the
model's own dump must equal the input: nothing we send is dropped or defaulted differently.
Exit 1 on any failure.
"""

import json
import sys

from pydantic import TypeAdapter

from dstack._internal.core.models.logs import JobSubmissionLogs
from dstack._internal.core.models.runs import Run, RunPlan
from dstack._internal.server.schemas.logs import PollLogsRequest
from dstack._internal.server.schemas.runs import (
    ApplyRunPlanRequest,
    DeleteRunsRequest,
    GetRunPlanRequest,
    GetRunRequest,
    ListRunsRequest,
    StopRunsRequest,
)

MODELS = {
    "Run": Run,
    "RunPlan": RunPlan,
    "list[Run]": TypeAdapter(list[Run]),
    "JobSubmissionLogs": JobSubmissionLogs,
    "GetRunPlanRequest": GetRunPlanRequest,
    "ApplyRunPlanRequest": ApplyRunPlanRequest,
    "GetRunRequest": GetRunRequest,
    "ListRunsRequest": ListRunsRequest,
    "StopRunsRequest": StopRunsRequest,
    "DeleteRunsRequest": DeleteRunsRequest,
    "PollLogsRequest": PollLogsRequest,
}


def main() -> int:
    cases = json.load(open(sys.argv[1]))
    failed = 0
    for case in cases:
        data = json.load(open(case["file"]))
        if case["model"] == "None":
            ok = data is None
            print(("PASS" if ok else "FAIL") + f" {case['name']} (None)")
            failed += not ok
            continue
        model = MODELS[case["model"]]
        try:
            if isinstance(model, TypeAdapter):
                model.validate_python(data)
            else:
                model.model_validate(data)
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {case['name']} ({case['model']}): {e}")
            continue
        print(f"PASS {case['name']} ({case['model']})")
    print(f"check_models: {len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
