"""`ember`: the command line. Subcommands live in their own modules.

Heavy libraries (Ray, torch, vLLM) are imported inside the commands that need
them, so `ember --help` and `ember chat` start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx

from ember.cli import (
    ask_cmd,
    batch_cmd,
    bench_cmd,
    chat_cmd,
    cluster_cmd,
    cost_cmd,
    data_cmd,
    eval_cmd,
    ingest_cmd,
    keys_cmd,
    models_cmd,
    monitor_cmd,
    train_cmd,
    tune_cmd,
)
from ember.cluster.environment import CLIENT_ENV
from ember.errors import EmberError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (models_cmd, cluster_cmd, keys_cmd, cost_cmd, monitor_cmd, chat_cmd, ask_cmd,
                   ingest_cmd, data_cmd, batch_cmd, eval_cmd, train_cmd, tune_cmd,
                   bench_cmd):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before anything imports Ray: Ray reads RAY_AUTH_MODE once per process, and a
    # Ray 2.60 head requires the token (a user's own setting wins).
    for key, value in CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except httpx.ConnectError as exc:
        print(
            f"ember: error: cannot reach the service ({exc}). Is it up? Try `ember status`.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EmberError as exc:
        print(f"ember: error: {exc}", file=sys.stderr)
        return 2


def quiet_libraries() -> None:
    """Library lines that say nothing to an Ember user stay off the terminal."""
    import logging

    # bitsandbytes (imported with transformers' quantization support) warns on every
    # import that an optional Hub kernel for 4-bit CPU matmuls is missing; Ember
    # never fetches kernels from the Hub and its CPU QLoRA runs without it.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
