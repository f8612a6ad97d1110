"""`ember chat "question"`: stream an answer to the terminal."""

from __future__ import annotations

import os
import sys

from ember.client import ChatStream, Client

DEFAULT_URL = os.environ.get("EMBER_URL", "http://127.0.0.1:8000")


def register(commands) -> None:
    chat = commands.add_parser("chat", help="ask the LLM a question, streaming the answer")
    chat.add_argument("question")
    chat.add_argument("--model", help="model id (default: the first in /v1/models)")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0)
    chat.add_argument("--usage", action="store_true", help="print token usage at the end")
    add_url_args(chat)
    chat.set_defaults(func=run)


def add_url_args(parser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Ember service (default {DEFAULT_URL})")
    parser.add_argument("--api-key", default=os.environ.get("EMBER_API_KEY"))


def run(args) -> int:
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.question})
    stream = ChatStream()
    with Client(args.url, api_key=args.api_key) as client:
        for delta in client.stream_chat(
            messages,
            model=args.model,
            stream=stream,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
        ):
            sys.stdout.write(delta)
            sys.stdout.flush()
    sys.stdout.write("\n")
    if args.usage and stream.usage:
        u = stream.usage
        print(
            f"[{stream.model}: {u.prompt_tokens} prompt + {u.completion_tokens} completion "
            f"tokens, finish: {stream.finish_reason}]",
            file=sys.stderr,
        )
    return 0
