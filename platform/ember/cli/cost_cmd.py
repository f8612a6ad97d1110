"""`ember cost report|estimate`: what serving cost, measured, against a hosted API."""

from __future__ import annotations

import json
import re

from ember.errors import EmberError


def register(commands) -> None:
    cost = commands.add_parser("cost", help="cost per request / 1M tokens; hosted-API "
                               "comparison; planning estimates")
    sub = cost.add_subparsers(dest="cost_command", required=True, metavar="ACTION")
    report = sub.add_parser("report", help="measured cost of the recorded traffic")
    report.add_argument("--since", default="24h", help="period: 30m, 24h, 7d (default 24h)")
    report.add_argument("--by", choices=["model", "key"], default="model")
    report.add_argument("--database-url", help="keys database (default: $EMBER_HOME/access)")
    _hosted_args(report)
    report.set_defaults(func=run_report)
    est = sub.add_parser("estimate", help="replicas and monthly cost for a planned load")
    est.add_argument("--users", type=int, required=True)
    est.add_argument("--messages-per-day", type=float, required=True, help="per user")
    est.add_argument("--input-tokens", type=int, required=True, help="per message")
    est.add_argument("--output-tokens", type=int, required=True, help="per message")
    est.add_argument("--bench", required=True, help="an `ember bench serve --json` result: "
                     "its best output tok/s is one replica's capacity")
    est.add_argument("--target", help="which target of the benchmark (default: all rows)")
    est.add_argument("--usd-per-hour", type=float, default=2.0,
                     help="price of one replica per hour (default 2.0, an A100)")
    est.add_argument("--peak-factor", type=float, default=1.0,
                     help="peak load / average load to provision for (default 1)")
    _hosted_args(est)
    est.set_defaults(func=run_estimate)


def _hosted_args(parser) -> None:
    parser.add_argument("--hosted", default="gpt-4o-mini=0.15/0.60",
                        help="hosted API to compare with: NAME=USD_IN/USD_OUT per 1M tokens "
                        "(default gpt-4o-mini=0.15/0.60)")


def parse_hosted(text: str) -> tuple[str, float, float]:
    match = re.fullmatch(r"([^=]+)=([\d.]+)/([\d.]+)", text.strip())
    if not match:
        raise EmberError(f"--hosted {text!r}: expected NAME=USD_IN/USD_OUT, e.g. "
                         f"gpt-4o-mini=0.15/0.60")
    return match.group(1), float(match.group(2)), float(match.group(3))


def parse_period(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise EmberError(f"--since {text!r}: expected a number and s, m, h or d (24h, 7d)")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def run_report(args) -> int:
    from ember.access.costs import format_report, load_report
    from ember.access.store import check_ready, default_url

    url = args.database_url or default_url()
    check_ready(url)
    report = load_report(url, parse_period(args.since), args.by, parse_hosted(args.hosted))
    print(format_report(report, args.by))
    return 0


def run_estimate(args) -> int:
    from ember.access.costs import best_throughput, estimate

    try:
        with open(args.bench) as f:
            capacity = best_throughput(json.load(f), args.target)
    except (OSError, ValueError, KeyError) as exc:
        raise EmberError(f"--bench {args.bench}: {exc}") from exc
    hosted = parse_hosted(args.hosted)
    e = estimate(args.users, args.messages_per_day, args.input_tokens, args.output_tokens,
                 capacity, args.usd_per_hour, args.peak_factor, hosted)
    print(f"load: {e.requests_per_day:,.0f} requests/day -> {e.output_tok_s_needed:,.1f} "
          f"output tok/s (x{args.peak_factor:g} peak)")
    print(f"measured: {e.capacity_tok_s:,.1f} output tok/s per replica ({args.bench})")
    print(f"self-hosted: {e.replicas} replica(s) x ${args.usd_per_hour:g}/h = "
          f"${e.self_hosted_monthly:,.2f} per month")
    print(f"hosted ({hosted[0]} at ${hosted[1]:g}/${hosted[2]:g} per 1M tokens): "
          f"${e.hosted_monthly:,.2f} per month")
    users_per_replica = args.users * e.capacity_tok_s / e.output_tok_s_needed
    print(f"break-even: from {e.break_even_users:,.0f} users the hosted API costs more than "
          f"one replica; one replica keeps up with {users_per_replica:,.0f} such users")
    return 0
