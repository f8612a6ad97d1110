"""`ember train CONFIG` and `ember serve-model SOURCE --name NAME`: the fine-tuning loop.

`ember train` runs `train_jobs.sft` on the running cluster (or a local one it
starts); `--address` submits it as a Ray job instead. `ember serve-model` puts
the result (an MLflow model URI or a folder) behind the running service.
"""

from __future__ import annotations


def register(commands) -> None:
    train = commands.add_parser("train", help="run a fine-tuning job (cluster/jobs/sft-*.yaml)")
    train.add_argument("config", help="an SFT job YAML")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one key, e.g. --set train.max_steps=10")
    train.add_argument("--address", help="submit as a Ray job to this dashboard address "
                       "(http://HEAD:8265)")
    train.set_defaults(func=run_train)
    serve = commands.add_parser("serve-model",
                                help="add a fine-tuned model to the running service")
    serve.add_argument("source", help="models:/NAME/VERSION, runs:/RUN_ID/model or a folder")
    serve.add_argument("--name", required=True, help="the model id clients will send")
    serve.add_argument("--app", default="ember", help="Serve application to extend")
    serve.add_argument("--address", default=None, help="Ray dashboard (default "
                       "http://127.0.0.1:8265)")
    serve.add_argument("--tracking-uri", help="MLflow tracking URI (default: Ember's SQLite)")
    serve.add_argument("--base", help="a LoRA adapter's base model, when several served "
                       "models load adapters (default: the one it was trained on)")
    serve.set_defaults(func=run_serve_model)


def run_train(args) -> int:
    from ember.config.loading import parse_set_overrides
    from ember.training.job import load_job_config

    load_job_config(args.config, parse_set_overrides(args.set))  # fail before Ray
    if args.address:
        return _submit(args)
    from ember.training.job import run_sft_logged

    print(run_sft_logged(load_job_config(args.config, parse_set_overrides(args.set))).format())
    return 0


def _submit(args) -> int:
    from ember.cluster.local import submit_module_job

    sets = [x for pair in args.set for x in ("--set", pair)]
    return submit_module_job(args.address, ["train_jobs.sft", "--config", args.config, *sets])


def run_serve_model(args) -> int:
    from ember.cli.cluster_cmd import DASHBOARD
    from ember.cluster.serve_models import add_model

    folder = add_model(args.address or DASHBOARD, args.source, args.name, args.app,
                       args.tracking_uri, base=args.base)
    print(f"model '{args.name}' is served from {folder}: use model='{args.name}', or "
          f"'rag@{args.name}' to answer RAG questions with it")
    return 0
