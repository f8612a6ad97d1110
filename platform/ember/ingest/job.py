"""Ingestion as a Ray job:

    ray job submit --working-dir . -- \
        python -m ember.ingest.job --config cluster/jobs/ingest-sample.yaml
"""

from __future__ import annotations

import argparse
import sys

from ember.config.loading import apply_env_overrides, load_yaml, validate
from ember.ingest.config import IngestConfig


def load_ingest_config(path: str | None, overrides: dict | None = None) -> IngestConfig:
    data = load_yaml(path) if path else {}
    data = apply_env_overrides({**data, **(overrides or {})}, prefix="EMBER_INGEST_")
    return validate(IngestConfig, data, source=path or "ingest options")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember.ingest.job", description=__doc__)
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    from ember.ingest.pipeline import run_ingest

    report = run_ingest(load_ingest_config(args.config))
    print(report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
