"""`ember ask "question" --collection NAME`: a grounded answer, streamed, with sources."""

from __future__ import annotations

import sys

from ember.cli.chat_cmd import add_url_args
from ember.client import Client, RagStream


def register(commands) -> None:
    ask = commands.add_parser("ask", help="ask a question over your documents (RAG)")
    ask.add_argument("question")
    ask.add_argument("--collection", help="default: the service's default collection")
    ask.add_argument("--top-k", type=int)
    ask.add_argument("--max-tokens", type=int, default=256)
    ask.add_argument("--temperature", type=float, default=0.0)
    add_url_args(ask)
    ask.set_defaults(func=run)


def run(args) -> int:
    stream = RagStream()
    with Client(args.url, api_key=args.api_key) as client:
        for delta in client.stream_rag(args.question, collection=args.collection,
                                       top_k=args.top_k, stream=stream,
                                       max_tokens=args.max_tokens,
                                       temperature=args.temperature):
            sys.stdout.write(delta)
            sys.stdout.flush()
    print("\n\nSources:")
    for hit in stream.sources:
        print(f"  [{hit.index}] {hit.title} ({hit.source}) score {hit.score:.3f}")
    return 0
