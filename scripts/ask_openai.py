"""Ask the running service a question through the official `openai` package.

    python scripts/ask_openai.py ["question"] [--model rag:docs] [--url http://127.0.0.1:8000]

With a `rag:<collection>` model the answer is grounded in that collection and
the response carries its `sources`, which this prints.
"""

import argparse

from ember.client.types import default_api_key
from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("question", nargs="?", default="What is the capital of France?")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", help="default: the first model the service lists")
    args = parser.parse_args()
    # The service wants an API key: EMBER_API_KEY, or the local admin key that
    # `ember up` wrote to $EMBER_HOME/access/admin-key (`ember keys create` makes others).
    client = OpenAI(base_url=f"{args.url}/v1", api_key=default_api_key())
    model = args.model or client.models.list().data[0].id
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": args.question}],
        max_tokens=64, temperature=0)
    print(f"[openai package] {model}: {answer.choices[0].message.content}")
    for source in (answer.model_extra or {}).get("sources", []):
        print(f"  [{source['index']}] {source['title']} ({source['source']})")


if __name__ == "__main__":
    main()
