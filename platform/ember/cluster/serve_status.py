"""Read Serve's application status and wait for it, showing progress."""

from __future__ import annotations

import os
import time

from ember.errors import ClusterError

SERVE_LOGS = "/tmp/ray/session_latest/logs/serve/"


def serve_details(dashboard_url: str) -> dict:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    return ServeSubmissionClient(dashboard_url).get_serve_details()


def app_summary(details: dict) -> dict[str, dict]:
    """{app: {"status": ..., "message": ..., "deployments": {name: status}}}."""
    summary = {}
    for name, app in (details.get("applications") or {}).items():
        summary[name] = {
            "status": app.get("status"),
            "message": app.get("message") or "",
            "deployments": {
                d: info.get("status") + _replicas(info)
                for d, info in (app.get("deployments") or {}).items()
            },
        }
    return summary


def _describe(app: str, state: dict) -> str:
    deployments = ", ".join(f"{d} {s}" for d, s in state.get("deployments", {}).items())
    return f"{app}: {state.get('status', 'NOT_STARTED')} [{deployments}]"


def _replicas(info: dict) -> str:
    states = [r.get("state") for r in info.get("replicas") or []]
    running = states.count("RUNNING")
    return f" ({running}/{len(states)} replicas running)" if states else ""


def wait_until_running(
    dashboard_url: str, apps: list[str], timeout_s: float = 1200, progress=print
) -> None:
    """Poll until every app is RUNNING; raise with Serve's message if one fails."""
    start, last = time.monotonic(), None
    while time.monotonic() - start < timeout_s:
        summary = app_summary(serve_details(dashboard_url))
        line = "; ".join(_describe(a, summary.get(a, {})) for a in apps)
        if line != last:
            progress(f"  [{time.monotonic() - start:5.0f}s] {line}")
            last = line
        failed = [a for a in apps if summary.get(a, {}).get("status") == "DEPLOY_FAILED"]
        if failed:
            raise ClusterError(
                f"application {failed[0]} failed to deploy:\n"
                f"{summary[failed[0]]['message']}\nLogs: {SERVE_LOGS}"
            )
        if all(summary.get(a, {}).get("status") == "RUNNING" for a in apps):
            return
        time.sleep(3)
    raise ClusterError(
        f"applications {apps} not running after {timeout_s:.0f}s; "
        f"see `serve status` and {SERVE_LOGS}"
    )
