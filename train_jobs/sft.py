"""Supervised fine-tuning on Ray Train:

    python -m train_jobs.sft --config cluster/jobs/sft-lora-cpu.yaml
    ray job submit --working-dir . -- \
        python -m train_jobs.sft --config cluster/jobs/sft-lora-cpu.yaml

Keys: `ember.training.config.SFTJobConfig`. `--set a.b=value` overrides one key
(YAML-parsed), as do `EMBER_SFT_A__B=value` variables. Exit status 2: the config
or dataset was refused before training; 1: training failed (the MLflow run is
marked FAILED, the last checkpoint is kept).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train_jobs.sft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from ember.config.loading import parse_set_overrides
    from ember.errors import EmberError
    from ember.training.job import load_job_config, run_sft_logged

    try:
        config = load_job_config(args.config, parse_set_overrides(args.set))
        result = run_sft_logged(config)
    except EmberError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
