"""Every route of the real service, fuzzed from its own OpenAPI schema (schemathesis).

    .venv/bin/python -m pytest -p tests.integration.conftest scripts/fuzz_service.py -s

Held out of `make test` for now: in the one full run with it, the test after it
(test_serving_faults' client-disconnect test) found an engine request still unfinished
30 s after its client left. Until that is understood it runs on its own, on the
session deployment of tests/integration/conftest.py.

The service publishes `/openapi.json` (Ray's OpenAI ingress is a FastAPI app; Ember's
routes are bound on it). Schemathesis generates requests from it, valid and invalid
(Hypothesis underneath), a bounded number per operation, sent with a valid key. Each
answer must be below 500, and every error an OpenAI error object. After the run the
service still answers a chat. What reaches an engine is kept short (a few tokens, n <= 2),
so the cases test the request path, not the CPU's patience.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

CASES_PER_ROUTE = 12
MAX_GENERATED_TOKENS = 4
# a valid body on these routes names a served model: the fuzzed one reaches its engine
MODEL_OF = {"/v1/chat/completions": "smollm2-135m-instruct",
            "/v1/completions": "smollm2-135m-instruct", "/v1/embeddings": "all-minilm-l6-v2"}
SEEN: dict[str, Counter] = defaultdict(Counter)  # operation -> answers by status class


def bounded(body: dict) -> dict:
    """The same request, asking the engine for little work: a fuzzed `max_tokens` of
    None means "up to the context length", minutes on this CPU."""
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value > 0:
            body[field] = MAX_GENERATED_TOKENS
    if isinstance(body.get("n"), int) and body["n"] > 2:
        body["n"] = 2
    for field in ("min_tokens", "best_of"):
        body.pop(field, None)
    return body


def is_openai_error(content: bytes) -> bool:
    try:
        data = json.loads(content)
    except ValueError:
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str) \
        and "Traceback" not in error["message"]


def fuzz(operation, mode: GenerationMode, auth: dict, problems: list[str]) -> None:
    """CASES_PER_ROUTE requests of `mode` for one operation, each answer checked."""

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=CASES_PER_ROUTE, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def one(case) -> None:
        if isinstance(case.body, dict):
            bounded(case.body)
            if mode is GenerationMode.POSITIVE and operation.path in MODEL_OF:
                case.body["model"] = MODEL_OF[operation.path]  # reach the engine, not a 404
        response = case.call(headers=auth, timeout=120)
        SEEN[operation.label][f"{response.status_code // 100}xx"] += 1
        status = response.status_code
        if status >= 500 or (status >= 400 and not is_openai_error(response.content)):
            problems.append(f"{operation.label} ({mode}): {status} "
                            f"{response.content[:300]!r} for body {str(case.body)[:300]}")

    try:
        one()
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise  # an operation without parameters has no invalid request: fine


def test_no_route_answers_a_server_error_or_an_error_of_another_shape(base_url, auth):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=auth,
                                           timeout=60)
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, auth, problems)
    assert len(SEEN) >= 10, f"only {sorted(SEEN)} in the service's schema"
    assert not problems, "\n".join(problems[:20])


def test_the_service_still_answers_after_the_fuzzing(base_url, auth):
    print("\nfuzzed answers per operation:")
    for label, counts in sorted(SEEN.items()):
        print(f"  {label}: {dict(sorted(counts.items()))}")
    assert SEEN, "the fuzzing test did not run first"
    response = httpx.post(f"{base_url}/v1/chat/completions", headers=auth, timeout=120,
                          json={"model": "smollm2-135m-instruct", "max_tokens": 4,
                                "messages": [{"role": "user", "content": "Hello"}]})
    assert response.status_code == 200, response.text
