"""Fault suite, HTTP: schema-driven fuzzing of every endpoint of a live server (uvicorn, the
predict lane and the ASGI routes) with schemathesis, from the server's own ``/openapi.json``.

For each operation, hypothesis draws a bounded number of requests that fit the schema (positive)
and that do not (negative). Each response is checked: no 5xx (``not_a_server_error``), no request
that breaks the schema accepted with a 2xx (``negative_data_rejection``: a silent acceptance), only
documented status codes and content types, bodies that fit the documented response schema; and
the server logs no traceback. The tallies are printed (``-s``) and recorded in the README's
RELIABILITY section.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from test_serve_lane import running, served

from ember.deploy.serve import create_app

pytestmark = [pytest.mark.slow, pytest.mark.faults]

EXAMPLES = 100  # per operation and generation mode


def _checks() -> list[Any]:
    from schemathesis.checks import (
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        negative_data_rejection,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]


def _config() -> Any:
    """413 rejects a request too (over max_items or max_body_bytes: the schema's maxItems)."""
    from schemathesis.config import SchemathesisConfig

    rejected = [400, 405, 406, 408, 413, 415, 422]
    return SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": rejected}}}
    )


def _fuzz(operation: Any, mode: Any, url: str, tally: Counter[str], failures: list[str]) -> None:
    """Send ``EXAMPLES`` requests drawn for ``operation`` in ``mode``; count and keep every failure."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        try:
            response = case.call_and_validate(base_url=url, checks=_checks(), timeout=30)
            tally[f"{response.status_code // 100}xx"] += 1
        except Exception as e:
            tally["failed"] += 1
            failures.append(f"{operation.label} {mode.value}: {type(e).__name__}: {str(e)[:600]}")

    try:
        fuzz()
    except Unsatisfiable:  # no request can break the schema of an operation that takes nothing
        tally["operations with no negative case"] += 1


def test_every_endpoint_survives_schema_driven_fuzzing(caplog: pytest.LogCaptureFixture) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    app = create_app(served(), max_items=16, max_body_bytes=1 << 16, admin_token="fuzz")
    tally: Counter[str] = Counter()
    failures: list[str] = []
    uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's loggers do not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    with caplog.at_level(logging.ERROR), running(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=_config())
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, url, tally, failures)
        records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    uvicorn_log.removeHandler(caplog.handler)
    total = sum(v for k, v in tally.items() if k.endswith("xx") or k == "failed")
    print(f"\nHTTP fuzzing: {len(operations)} operations, {total} requests, {dict(tally)}")
    assert len(operations) >= 7  # predict, healthz, readyz, metrics, model, admin model, drift
    assert not failures, "\n".join(failures[:10])
    assert not records, [r.getMessage() for r in records[:5]]
