"""`ember eval retrieval QUESTIONS.jsonl --collection NAME`: retrieval quality and latency."""

from __future__ import annotations

import json

from ember.cli.chat_cmd import add_url_args


def register(commands) -> None:
    evaluate = commands.add_parser("eval", help="evaluate the service (retrieval quality)")
    kinds = evaluate.add_subparsers(dest="kind", required=True, metavar="KIND")
    retrieval = kinds.add_parser(
        "retrieval", help="hit@1/3/5, MRR@10 and latency of /v1/retrieve on questions whose "
                          "answering source is known")
    retrieval.add_argument("questions", help='JSONL: {"question": ..., "source": ...} per line')
    retrieval.add_argument("--collection", required=True)
    retrieval.add_argument("--modes", default="dense,hybrid,hybrid+rerank",
                           help="comma-separated: dense, keyword, hybrid, dense+rerank, "
                                "hybrid+rerank")
    retrieval.add_argument("--json", help="also write the figures and every miss here")
    add_url_args(retrieval)
    retrieval.set_defaults(func=run_retrieval)


def run_retrieval(args) -> int:
    from ember.client import Client
    from ember.errors import EmberError
    from ember.eval import retrieval as ev

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ev.MODES]
    if unknown or not modes:
        raise EmberError(f"unknown mode(s) {unknown}: choose from {', '.join(ev.MODES)}")
    questions = ev.load_questions(args.questions)
    print(f"{len(questions)} questions on collection '{args.collection}', modes: "
          f"{', '.join(modes)}")
    with Client(args.url, api_key=args.api_key, timeout=120) as client:
        results = ev.evaluate(client, questions, args.collection, modes)
    print(ev.format_report(results, len(questions)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ev.as_json(results, len(questions)), f, indent=2)
    return 0
