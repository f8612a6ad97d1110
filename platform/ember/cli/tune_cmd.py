"""`ember tune CONFIG`: a Ray Tune sweep over an SFT job (`python -m tune.sweep`)."""

from __future__ import annotations


def register(commands) -> None:
    tune = commands.add_parser("tune", help="sweep an SFT job's hyperparameters "
                               "(cluster/jobs/sweep-*.yaml)")
    tune.add_argument("config", help="a sweep YAML")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override one key, e.g. --set search.num_samples=4")
    tune.set_defaults(func=run)


def run(args) -> int:
    from ember.config.loading import parse_set_overrides
    from ember.tuning.sweep import load_sweep_config, run_sweep

    config = load_sweep_config(args.config, parse_set_overrides(args.set))
    result = run_sweep(config)
    print(result.summary(config.search.metric))
    return 0 if result.best_config_path else 1
