"""`ember bench serve`'s report: medians over rounds with ratios to a baseline, and the
Markdown tables (the load and its measurements are in `serve_bench`)."""

from __future__ import annotations

import statistics

MEDIAN_KEYS = ("output_tok_s", "ttft_p50", "itl_p50", "e2e_p50", "e2e_p99")
GPU_KEYS = ("gpu_util_pct", "gpu_mem_gib")


def median_or_none(values) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def medians(rows: list[dict], baseline: str | None = None) -> list[dict]:
    """Per target and level: the median over rounds, and the ratio to `baseline`'s."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["target"], row["concurrency"]), []).append(row)
    out = []
    for (target, level), group in groups.items():
        med = {k: statistics.median(r[k] for r in group) for k in MEDIAN_KEYS}
        gpu = {k: median_or_none(r.get(k) for r in group) for k in GPU_KEYS}
        out.append({"target": target, "concurrency": level, "rounds": len(group),
                    "errors": sum(r["errors"] for r in group), **med, **gpu})
    for row in out:
        base = next((b for b in out if b["target"] == baseline
                     and b["concurrency"] == row["concurrency"]), None)
        row["tok_s_ratio"] = row["output_tok_s"] / base["output_tok_s"] if base else float("nan")
        row["ttft_overhead_ms"] = (row["ttft_p50"] - base["ttft_p50"]) * 1000 if base \
            else float("nan")
    return out


COLUMNS = [
    ("target", "{}"),
    ("concurrency", "{}"),
    ("clients", "{}"),
    ("requests", "{}"),
    ("errors", "{}"),
    ("output_tok_s", "{:.1f}"),
    ("req_s", "{:.2f}"),
    ("ttft_p50", "{:.3f}"),
    ("ttft_p95", "{:.3f}"),
    ("ttft_p99", "{:.3f}"),
    ("itl_p50", "{:.4f}"),
    ("itl_p95", "{:.4f}"),
    ("itl_p99", "{:.4f}"),
    ("e2e_p50", "{:.3f}"),
    ("e2e_p95", "{:.3f}"),
    ("e2e_p99", "{:.3f}"),
    ("gpu_util_pct", "{:.0f}"),
    ("gpu_mem_gib", "{:.1f}"),
]


MEDIAN_COLUMNS = [
    ("target", "{}"), ("concurrency", "{}"), ("rounds", "{}"), ("errors", "{}"),
    ("output_tok_s", "{:.1f}"), ("tok_s_ratio", "{:.3f}"), ("ttft_p50", "{:.3f}"),
    ("ttft_overhead_ms", "{:+.1f}"), ("itl_p50", "{:.4f}"), ("e2e_p50", "{:.3f}"),
    ("e2e_p99", "{:.3f}"), ("gpu_util_pct", "{:.0f}"), ("gpu_mem_gib", "{:.1f}"),
]
SOAK_COLUMNS = [
    ("target", "{}"), ("concurrency", "{}"), ("window", "{}"), ("requests", "{}"),
    ("errors", "{}"), ("output_tok_s", "{:.1f}"), ("ttft_p50", "{:.3f}"), ("ttft_p99", "{:.3f}"),
    ("e2e_p50", "{:.3f}"), ("e2e_p99", "{:.3f}"), ("gpu_util_pct", "{:.0f}"),
    ("gpu_mem_gib", "{:.1f}"), ("first_error", "{}"),
]


def format_table(rows: list[dict], columns=COLUMNS) -> str:
    """A Markdown table; latencies in seconds, GPU memory in GiB; None is "n/a"."""
    header = "| " + " | ".join(name for name, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(row[name], fmt) for name, fmt in columns) + " |"
            for row in rows]
    return "\n".join([header, rule, *body])


def cell(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)
