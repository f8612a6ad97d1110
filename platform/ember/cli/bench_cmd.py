"""`ember bench serve`: benchmark OpenAI-compatible endpoints side by side."""

from __future__ import annotations

import asyncio
import json

from ember.errors import EmberError


def register(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    serve = sub.add_parser("serve", help="latency and throughput of OpenAI-compatible servers")
    serve.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="LABEL=URL[@MODEL]",
        help="a server to measure; repeat to compare in one run",
    )
    serve.add_argument("--model", help="model id for targets that do not name one")
    serve.add_argument("--concurrency", default="1,32", help="comma-separated levels")
    serve.add_argument("--requests", type=int, help="requests per level (default 2x, min 8)")
    serve.add_argument("--max-tokens", type=int, default=64)
    serve.add_argument("--json", help="also write the rows to this JSON file")
    serve.set_defaults(func=run_serve)


def parse_target(spec: str, default_model: str | None):
    from ember.bench.serve_bench import Target

    label, sep, rest = spec.partition("=")
    if not sep:
        raise EmberError(f"--target '{spec}': expected LABEL=URL[@MODEL]")
    url, _, model = rest.partition("@")
    model = model or default_model
    if not model:
        raise EmberError(f"--target '{spec}' names no model: add @MODEL or --model")
    return Target(label, url.rstrip("/").removesuffix("/v1"), model)


def run_serve(args) -> int:
    from ember.bench.serve_bench import format_table, run_bench

    targets = [parse_target(t, args.model) for t in args.target]
    levels = [int(x) for x in args.concurrency.split(",")]
    rows = asyncio.run(run_bench(targets, levels, args.requests, args.max_tokens))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0
