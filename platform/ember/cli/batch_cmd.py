"""`ember batch run`: an OpenAI batch file through vLLM engines on Ray Data LLM.

Without `--address` the job runs from this process on the running local cluster (or
a fresh one); with it, it is submitted as a Ray job (`python -m ember.batch.job`),
and INPUT and --output must be paths the cluster's nodes see.
"""

from __future__ import annotations

from pathlib import Path


def register(commands) -> None:
    from ember.batch.job import add_arguments

    batch = commands.add_parser("batch", help="batch inference on OpenAI batch files")
    sub = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="run a batch file; a re-run resumes where it stopped")
    add_arguments(run)
    run.add_argument("--address", help="submit as a Ray job to this dashboard address "
                                       "(e.g. http://127.0.0.1:8265)")
    run.set_defaults(func=run_batch_cmd)


def run_batch_cmd(args) -> int:
    from ember.batch.job import config_from_args, run_batch

    config = config_from_args(args)  # checks the options before anything starts
    if args.address:
        from ember.cluster.local import submit_module_job

        argv = [str(Path(args.input).resolve()), "--model", args.model,
                "--output", str(config.output_path.resolve()),
                "--batch-size", str(args.batch_size), "--concurrency", str(args.concurrency),
                "--num-gpus", str(args.num_gpus), "--max-tokens", str(args.max_tokens)]
        argv += [f"--engine={e}" for e in args.engine]
        if args.name:
            argv += ["--name", args.name]
        return submit_module_job(args.address, ["ember.batch.job", *argv])
    report = run_batch(config)
    print(report.format())
    return 0  # like the Batch API: a batch completes with per-line errors in its output
