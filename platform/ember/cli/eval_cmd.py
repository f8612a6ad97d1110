"""`ember eval retrieval QUESTIONS.jsonl... --collection NAME`: retrieval quality and latency,
per question set and pooled.
`ember eval model MODEL --base BASE --data HELD_OUT.jsonl`: a model's answers and
perplexity on held-out chats, beside its base."""

from __future__ import annotations

import json
from pathlib import Path

from ember.cli.chat_cmd import add_url_args


def register(commands) -> None:
    evaluate = commands.add_parser("eval", help="evaluate the service (retrieval quality, "
                                                "a model against its base)")
    kinds = evaluate.add_subparsers(dest="kind", required=True, metavar="KIND")
    retrieval = kinds.add_parser(
        "retrieval", help="hit@1/3/5, MRR@10 and latency of /v1/retrieve on questions whose "
                          "answering source is known")
    retrieval.add_argument("questions", nargs="+",
                           help='JSONL: {"question": ..., "source": ...} per line; several '
                                'files are reported per set and pooled')
    retrieval.add_argument("--collection", required=True)
    retrieval.add_argument("--modes", default="dense,hybrid,hybrid+rerank",
                           help="comma-separated: dense, keyword, hybrid, dense+rerank, "
                                "hybrid+rerank")
    retrieval.add_argument("--json", help="also write the figures and every miss here")
    add_url_args(retrieval)
    retrieval.set_defaults(func=run_retrieval)
    register_model(kinds)


def register_model(kinds) -> None:
    model = kinds.add_parser(
        "model", help="perplexity, exact match, token F1 and ROUGE-L of a served model on "
                      "held-out chats, beside its base, through the running service")
    model.add_argument("model", help="the served model (an adapter's name, a model's name)")
    model.add_argument("--base", help="also evaluate this served model, side by side")
    model.add_argument("--data", required=True,
                       help="SFT JSONL (chat or Alpaca); the last assistant turn is the reference")
    model.add_argument("--format", default="auto", choices=("auto", "chat", "alpaca"))
    model.add_argument("--val-fraction", type=float, default=0.0,
                       help="evaluate only the held-out split `ember train` makes from this "
                            "file with this val_fraction (and --seed); 0: every line")
    model.add_argument("--seed", type=int, default=0, help="the training config's data.seed")
    model.add_argument("--max-examples", type=int, help="the first N examples only")
    model.add_argument("--max-tokens", type=int, default=128, help="per answer")
    model.add_argument("--concurrency", type=int, default=8)
    model.add_argument("--base-source", help="the base model's folder, where an adapter's "
                       "base is not a catalogue name (perplexity of adapters is scored on Ray)")
    model.add_argument("--json", help="write the figures and every example's scores here")
    model.add_argument("--markdown", help="write the report (table and changed answers) here")
    model.add_argument("--record", metavar="models:/NAME/VERSION",
                       help="log the figures (service_eval_*) and the report to this "
                            "registered version's run, for the promotion gate (needs --base)")
    model.add_argument("--tracking-uri", help="MLflow tracking URI for --record")
    add_url_args(model)
    model.set_defaults(func=run_model)


def run_model(args) -> int:
    from ember.client import Client
    from ember.eval import model_eval as ev

    if args.record and not args.base:
        from ember.errors import EmberError

        raise EmberError("--record needs --base: the promotion gate compares tuned with base")
    examples, report = ev.load_eval_examples(args.data, args.format, args.val_fraction,
                                             args.seed, args.max_examples)
    print(report.format_text(max_issues=10))  # as `ember data validate` reports bad lines
    split = " (its held-out split)" if args.val_fraction else ""
    print(f"{len(examples)} examples to evaluate{split}")
    models = [m for m in (args.model, args.base) if m]
    with Client(args.url, api_key=args.api_key, timeout=300) as client:
        # not on engines serving LoRA adapters (vLLM fails there): then both on Ray
        on_ray = not all(ev.service_scores_prompts(client, m, examples[0]) for m in models)
        scored = [ev.evaluate_model(client, m, examples, args.max_tokens, args.concurrency,
                                    perplexity=not on_ray) for m in models]
    tuned, base = scored[0], (scored[1] if args.base else None)
    if on_ray:
        print("[eval] the service gives no prompt log-probabilities where LoRA adapters are "
              "served (vLLM fails on them): both perplexities are scored on Ray (transformers)")
        for scores in (tuned, base):
            if scores is not None:
                ev.add_offline_perplexity(scores, examples, args.base_source)
    print(ev.format_table(tuned, base))
    if base:
        print(f"{len(ev.changed_examples(tuned, base))} of {len(examples)} answers changed")
    if args.markdown:
        Path(args.markdown).write_text(ev.markdown_report(tuned, base, examples, args.data))
    if args.json:
        Path(args.json).write_text(json.dumps(ev.as_json(tuned, base, args.data), indent=2))
    if args.record:
        _record(args, ev.as_json(tuned, base, args.data))
    return 0


def _record(args, report: dict) -> None:
    """The evaluation's figures as metrics of the version's training run (what the promotion
    gate reads, `ember.models.promotion`) and the report as its artefact."""
    from ember.cluster.rollout import MODEL_URI
    from ember.errors import EmberError
    from ember.models.promotion import Registry

    match = MODEL_URI.match(args.record)
    if not match or not match.group("version"):
        raise EmberError(f"--record {args.record!r}: expected models:/NAME/VERSION")
    registry = Registry(args.tracking_uri)
    version = registry.version(match.group("name"), match.group("version"))
    if not version.run_id:
        raise EmberError(f"{args.record} has no training run to record the evaluation in")
    metrics = {f"service_eval_{who}_{metric}": value
               for who in ("base", "tuned") for metric, value in report[who].items()
               if metric in ("exact_match", "f1", "rouge_l", "perplexity")
               and isinstance(value, int | float)}
    for metric, value in metrics.items():
        registry.client.log_metric(version.run_id, metric, float(value))
    registry.client.log_text(version.run_id, json.dumps(report, indent=2),
                             "eval/service_evaluation.json")
    print(f"recorded on {args.record}'s run: {', '.join(sorted(metrics))}")


def run_retrieval(args) -> int:
    from ember.client import Client
    from ember.errors import EmberError
    from ember.eval import retrieval as ev

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ev.MODES]
    if unknown or not modes:
        raise EmberError(f"unknown mode(s) {unknown}: choose from {', '.join(ev.MODES)}")
    sets = ev.load_question_sets(args.questions)
    counts = " + ".join(f"{len(s.questions)} ({s.name})" for s in sets) if len(sets) > 1 \
        else str(len(sets[0].questions))
    print(f"{counts} questions on collection '{args.collection}', modes: {', '.join(modes)}")
    with Client(args.url, api_key=args.api_key, timeout=120) as client:
        per_set = ev.evaluate(client, sets, args.collection, modes)
    print(ev.format_report(per_set))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ev.as_json(per_set), f, indent=2)
    return 0
