"""`ember bench serve`: benchmark OpenAI-compatible endpoints side by side."""

from __future__ import annotations

import asyncio
import json

from ember.errors import EmberError


def register(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    serve = sub.add_parser("serve", help="latency and throughput of OpenAI-compatible servers")
    serve.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="LABEL=URL[@MODEL[+MODEL...]]",
        help="a server to measure; repeat to compare in one run",
    )
    serve.add_argument("--model", help="model id for targets that do not name one")
    serve.add_argument("--concurrency", default="1,32,64,128", help="comma-separated levels")
    serve.add_argument("--requests", type=int, help="requests per level (default 2x, min 8)")
    serve.add_argument("--max-tokens", type=int, default=64)
    serve.add_argument("--clients", type=int, metavar="N",
                       help="client processes that share each level's streams and requests "
                            "(default: automatic, one per 32 streams, at most half the "
                            "machine's cores; 1 runs in this process; a soak uses one)")
    serve.add_argument("--repeat", type=int, default=1,
                       help="rounds per level (targets alternate); medians are reported")
    serve.add_argument("--baseline", metavar="LABEL",
                       help="target the medians are compared with (tok/s ratio, TTFT overhead)")
    serve.add_argument("--duration", type=float, metavar="SECONDS",
                       help="a soak instead: each target at the (single) concurrency for this "
                            "long, reported per --window")
    serve.add_argument("--window", type=float, default=60, metavar="SECONDS")
    serve.add_argument("--json", help="also write the rows to this JSON file")
    serve.set_defaults(func=run_serve)
    ingest = sub.add_parser("ingest", help="ingestion throughput vs bare encoding; search latency")
    ingest.add_argument("--files", type=int, default=400)
    ingest.add_argument("--paragraphs", type=int, default=40, help="per file")
    ingest.add_argument("--workdir", default="/tmp/ember-bench-ingest")
    ingest.add_argument("--queries", type=int, default=200)
    ingest.add_argument("--top-k", type=int, default=5)
    ingest.add_argument("--embed-concurrency", type=int, default=None,
                        help="embedding actors (default: the config's, one per core)")
    ingest.add_argument("--embed-num-cpus", type=float, default=1)
    ingest.add_argument("--search-at", type=int, default=20000,
                        help="pad the collection with perturbed copies of the ingested chunks "
                             "to this many before measuring search latency")
    ingest.add_argument("--baseline-chunks", type=int, default=4096,
                        help="chunks the bare-model baseline encodes (a rate needs no more)")
    ingest.set_defaults(func=run_ingest_bench)
    batch = sub.add_parser("batch", help="batch job vs offline vllm.LLM.generate vs the online "
                                         "service, and online latency while a batch runs")
    batch.add_argument("--model", default="smollm2-135m-instruct")
    batch.add_argument("--lines", type=int, default=300)
    batch.add_argument("--max-tokens", type=int, default=32)
    batch.add_argument("--url", help="the online service (e.g. http://127.0.0.1:8000): "
                                     "adds its rows")
    batch.add_argument("--online-concurrency", type=int, default=32)
    batch.add_argument("--batch-size", type=int, action="append", dest="batch_sizes",
                       help="Ray Data batch size of the batch job; repeat to compare several "
                            "side by side (default: the job's default)")
    batch.add_argument("--during-lines", type=int, default=100,
                       help="lines of the batch that runs while online c=1 latency is taken")
    batch.add_argument("--workdir", default="/tmp/ember-bench-batch")
    batch.set_defaults(func=run_batch_bench)


def parse_target(spec: str, default_model: str | None):
    from ember.bench.serve_bench import Target

    label, sep, rest = spec.partition("=")
    if not sep:
        raise EmberError(f"--target '{spec}': expected LABEL=URL[@MODEL]")
    url, _, model = rest.partition("@")
    model = model or default_model
    if not model:
        raise EmberError(f"--target '{spec}' names no model: add @MODEL or --model")
    return Target(label, url.rstrip("/").removesuffix("/v1"), model)


def run_serve(args) -> int:
    from ember.bench.serve_bench import MEDIAN_COLUMNS, format_table, medians, run_bench

    targets = [parse_target(t, args.model) for t in args.target]
    levels = [int(x) for x in args.concurrency.split(",")]
    if args.duration:
        return run_soak(args, targets, levels)
    if args.baseline and args.baseline not in {t.label for t in targets}:
        raise EmberError(f"--baseline '{args.baseline}' is not one of the targets' labels")
    if args.clients is not None and args.clients < 1:
        raise EmberError("--clients must be at least 1")
    rows = asyncio.run(run_bench(targets, levels, args.requests, args.max_tokens,
                                 repeat=args.repeat, clients=args.clients))
    print(format_table(rows))
    for row in rows:
        if row["errors"]:
            print(f"  {row['target']} c={row['concurrency']} round {row['round']}: "
                  f"{row['errors']} errors, the first: {row['first_error']}")
    summary = medians(rows, args.baseline)
    if args.repeat > 1 or args.baseline:
        print(f"\nmedians over {args.repeat} round(s)"
              + (f", compared with '{args.baseline}'" if args.baseline else "") + ":")
        print(format_table(summary, MEDIAN_COLUMNS))
    _write_json(args.json, {"runs": rows, "medians": summary})
    return 0


def run_soak(args, targets, levels) -> int:
    from ember.bench.serve_bench import SOAK_COLUMNS, format_table, soak

    if len(levels) != 1:
        raise EmberError("--duration runs one concurrency level: pass --concurrency N")
    rows = []
    for target in targets:
        print(f"  {target.label}: {levels[0]} streams for {args.duration:.0f}s ...")
        rows += asyncio.run(soak(target, levels[0], args.duration, args.max_tokens,
                                 args.window))
    print(format_table(rows, SOAK_COLUMNS))
    _write_json(args.json, {"soak": rows})
    return 0 if not any(r["errors"] for r in rows) else 1


def _write_json(path: str | None, data: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2)


def run_ingest_bench(args) -> int:
    import shutil
    from pathlib import Path

    from ember.bench import ingest_bench as b
    from ember.ingest.config import IngestConfig
    from ember.ingest.pipeline import run_ingest
    from ember.models.embedder import embed, load_embedder
    from ember.vectorstore.lite_server import shared_uri
    from ember.vectorstore.milvus import MilvusStore

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    b.make_corpus(work / "corpus", args.files, args.paragraphs)
    config = IngestConfig(paths=[str(work / "corpus")], collection="bench",
                          milvus_uri=str(work / "milvus.db"),
                          embed_concurrency=args.embed_concurrency,
                          embed_num_cpus=args.embed_num_cpus)
    report = run_ingest(config)
    print(report.format().splitlines()[0])
    store = MilvusStore(shared_uri(config.milvus_uri))
    # the very strings the pipeline embedded (each chunk under its headings), chunked
    # again here with the same stage: Milvus keeps the text, not the heading path
    texts = b.embedded_texts(sorted((work / "corpus").glob("*.md")), config,
                             args.baseline_chunks)
    bare = b.bare_encode_rate(texts, config.embedder, config.embed_batch_size)
    own = b.bare_pipeline_encoder_rate(texts, config.embedder, config.embed_batch_size,
                                       config.embed_backend)
    queries = embed(load_embedder(config.embedder),
                    [" ".join(t.split()[:8]) for t in texts[: args.queries]])
    total = b.pad_collection(store, "bench", args.search_at)
    latencies = b.search_latencies(store, "bench", list(queries), args.top_k)
    print(b.summarize(report.chunks_per_s, bare, own, latencies, total))
    return 0


def run_batch_bench(args) -> int:
    import os
    import shutil
    import threading
    from pathlib import Path

    from ember.batch.job import CPU_ENGINE, BatchConfig, check_lines, resolve_batch_model, run_batch
    from ember.bench import batch_bench as b

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lines = b.make_lines(args.lines, args.model, args.max_tokens)
    (work / "batch.jsonl").write_text("\n".join(lines) + "\n")
    model_path = resolve_batch_model(args.model)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    entries = check_lines(list(enumerate(lines, 1)), args.model, tokenizer,
                          CPU_ENGINE["max_model_len"], args.max_tokens)
    (work / "prompts.json").write_text(json.dumps([e.prompt for e in entries]))
    rows = []

    print(f"offline vllm.LLM.generate, {len(lines)} prompts ...")
    offline = b.offline_generate(model_path, str(work / "prompts.json"), args.max_tokens,
                                 CPU_ENGINE)
    rows.append(("offline vllm.LLM.generate", offline["start_s"] + offline["generate_s"],
                 offline["generate_s"], sum(offline["tokens"])))

    def batch_job(output: str, source: str = "batch.jsonl", **options):
        return run_batch(BatchConfig(input=str(work / source), model=args.model,
                                     output=str(work / output), **options),
                         progress=lambda _: None)

    # Ray Data LLM does not say when its engine is ready: a one-line batch measures the
    # start-up (engine, workers, one short request), and the full batch's generation
    # time is its engine time minus that
    (work / "one.jsonl").write_text(lines[0] + "\n")
    print("ember batch run, one line (start-up) ...")
    startup = batch_job("one-out.jsonl", "one.jsonl").engine_seconds
    for size in args.batch_sizes or [BatchConfig.model_fields["batch_size"].default]:
        print(f"ember batch run (Ray Data LLM), {len(lines)} lines, batch_size {size} ...")
        report = batch_job(f"out-{size}.jsonl", batch_size=size)
        rows.append((f"ember batch run, batch_size {size}", report.engine_seconds,
                     report.engine_seconds - startup, report.output_tokens))
    key = os.environ.get("EMBER_API_KEY")
    if args.url:
        print(f"online service, concurrency {args.online_concurrency} ...")
        online = asyncio.run(b.online_run(args.url, key, lines, args.online_concurrency))
        rows.append((f"online service, c={args.online_concurrency}", online["seconds"],
                     online["seconds"], sum(online["tokens"])))
    print(_batch_table(rows, len(lines)))
    if args.url:
        body = json.loads(lines[0])["body"]
        idle = b.latencies_c1(args.url, key, body, threading.Event(), limit=10)
        stop, during = threading.Event(), []
        probe = threading.Thread(target=lambda: during.extend(
            b.latencies_c1(args.url, key, body, stop)))
        (work / "during.jsonl").write_text("\n".join(lines[:args.during_lines]) + "\n")
        print(f"online c=1 latency while a {args.during_lines}-line batch runs ...")
        probe.start()
        during_batch = batch_job("during-out.jsonl", "during.jsonl")
        stop.set()
        probe.join()
        print(f"that batch: {during_batch.engine_seconds:.0f} s in the engine "
              f"({during_batch.output_tokens} output tokens)")
        print(f"online c=1 latency ({args.max_tokens} tokens): idle p50 {b.median_ms(idle)} "
              f"({len(idle)} requests), during a batch p50 {b.median_ms(during)} "
              f"({len(during)} requests)")
    return 0


def _batch_table(rows, requests: int) -> str:
    base = rows[0][3] / rows[0][2]  # offline output tok/s
    lines = ["| path | whole run s | generation s | req/s | output tok/s | output tokens | "
             "vs offline |", "|---|---|---|---|---|---|---|"]
    for name, whole, generation, tokens in rows:
        rate = tokens / generation
        lines.append(f"| {name} | {whole:.1f} | {generation:.1f} | {requests / generation:.2f} "
                     f"| {rate:.1f} | {tokens} | {rate / base:.2f}x |")
    return "\n".join(lines)
