"""A hyperparameter sweep over an SFT job with Ray Tune, Optuna (TPE) and ASHA:

    python -m tune.sweep --config cluster/jobs/sweep-lora-cpu.yaml
    ray job submit --working-dir . -- python -m tune.sweep --config cluster/jobs/sweep-lora-cpu.yaml

Keys: `ember.tuning.config.SweepConfig`. Running it again after an interruption
restores the sweep (finished trials are kept). Exit status 2: the sweep config
was refused before any trial started.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from ember.config.loading import parse_set_overrides
    from ember.errors import EmberError
    from ember.tuning.sweep import load_sweep_config, run_sweep

    try:
        config = load_sweep_config(args.config, parse_set_overrides(args.set))
    except EmberError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_sweep(config)
    print(result.summary(config.search.metric))
    return 0 if result.best_config_path else 1


if __name__ == "__main__":
    sys.exit(main())
