"""`ember ingest PATH... --collection NAME`: ingest documents into Milvus.

Runs on the local Ray cluster (started for the run if none is up), or, with
`--address`, is submitted as a Ray job (`python -m ember.ingest.job`) to a
remote cluster, which then needs Ember installed or the repo as working_dir.
"""

from __future__ import annotations


def register(commands) -> None:
    ingest = commands.add_parser("ingest", help="ingest documents into a collection")
    ingest.add_argument("paths", nargs="+", help="files, folders or globs")
    ingest.add_argument("--collection", required=True)
    ingest.add_argument("--config", help="an ingest YAML; CLI flags override its values")
    ingest.add_argument("--embedder")
    ingest.add_argument("--milvus-uri")
    ingest.add_argument("--chunk-tokens", type=int)
    ingest.add_argument("--overlap-tokens", type=int)
    ingest.add_argument("--address", help="submit as a Ray job to this dashboard address "
                        "(http://HEAD:8265)")
    ingest.set_defaults(func=run)


def run(args) -> int:
    from ember.ingest.job import load_ingest_config

    overrides = {"paths": args.paths, "collection": args.collection, "embedder": args.embedder,
                 "milvus_uri": args.milvus_uri, "chunk_tokens": args.chunk_tokens,
                 "overlap_tokens": args.overlap_tokens}
    config = load_ingest_config(args.config, {k: v for k, v in overrides.items() if v})
    if args.address:
        return _submit(args.address, config)
    from ember.ingest.pipeline import run_ingest

    report = run_ingest(config)
    print(report.format())
    return 0


def _submit(address: str, config) -> int:
    import tempfile
    from pathlib import Path

    import yaml

    from ember.cluster.local import submit_module_job

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=".", delete=False) as f:
        yaml.safe_dump(config.model_dump(exclude_none=True), f)
    try:
        return submit_module_job(address, ["ember.ingest.job", "--config", Path(f.name).name])
    finally:
        Path(f.name).unlink()
