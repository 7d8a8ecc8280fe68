"""Serving load for generation: ``/v1/chat/completions`` on the bundled SmolLM2-135M-Instruct, the
same prompts sent one at a time and then all at once, against one ``lmforge serve`` process.

Concurrent chat requests are decoded together a step at a time (one forward pass for the whole
batch), so the server's generated tokens per second should grow with the clients while each reply
stays what it is alone (greedy: the same text; reported). Baseline: the same server, one request at
a time, so it runs on the server's ``--device`` too (this script's ``--device``, default cpu).

    python bench/serve_chat_load.py --quick     # 4 prompts x 32 tokens
    python bench/serve_chat_load.py             # 8 prompts x 64 tokens
    python bench/serve_chat_load.py --device cuda
    python bench/serve_chat_load.py --engine llama_cpp   # the bundled GGUF on llama.cpp, batched too

The last line printed is ``ratio: X.XX`` = generated tokens/s with all clients at once / one at a time.
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_device_arg, resolve_device  # noqa: E402
from generate_throughput import PROMPTS  # noqa: E402
from serve_load import Connection, free_port, start_server  # noqa: E402


async def ask(port: int, prompt: str, max_tokens: int, model: str) -> dict:
    connection = await Connection(port).open()
    started = time.perf_counter()
    status, body = await connection.post(
        "/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0},
    )
    seconds = time.perf_counter() - started
    connection.close()
    if status != 200:
        return {"error": status}
    reply = json.loads(body)
    return {
        "text": reply["choices"][0]["message"]["content"],
        "tokens": reply["usage"]["completion_tokens"],
        "seconds": seconds,
    }


async def one_at_a_time(port, prompts, max_tokens, model):
    return [await ask(port, p, max_tokens, model) for p in prompts]


async def all_at_once(port, prompts, max_tokens, model):
    return await asyncio.gather(*(ask(port, p, max_tokens, model) for p in prompts))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 prompts x 32 tokens")
    parser.add_argument("--prompts", type=int)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--engine",
        default="torch",
        choices=("auto", "torch", "llama_cpp"),
        help="the server's engine (default torch: it batches concurrent requests; llama.cpp runs them one at a time)",
    )
    add_device_arg(parser)
    args = parser.parse_args(argv)
    device, device_label = resolve_device(args.device)
    args.prompts = args.prompts or (4 if args.quick else 8)
    max_tokens = args.max_tokens or (32 if args.quick else 64)
    prompts = (PROMPTS * 4)[: args.prompts]
    port = free_port()
    server = start_server(
        [args.model, "--max-generation-batch", str(args.prompts), "--device", device, "--engine", args.engine], port
    )
    name = Path(args.model).name
    try:
        asyncio.run(ask(port, "Hello", 4, name))  # warm up
        results = {}
        for side, run in (("one at a time", one_at_a_time), ("all at once", all_at_once)):
            started = time.perf_counter()
            replies = asyncio.run(run(port, prompts, max_tokens, name))
            seconds = time.perf_counter() - started
            tokens = sum(r.get("tokens", 0) for r in replies)
            results[side] = {
                "seconds": round(seconds, 2),
                "tokens": tokens,
                "tokens_per_s": round(tokens / seconds, 2),
                "errors": sum("error" in r for r in replies),
                "p50_s": round(sorted(r.get("seconds", 0) for r in replies)[len(replies) // 2], 2),
                "texts": [r.get("text") for r in replies],
            }
    finally:
        server.terminate()
        server.wait(60)
    same = sum(a == b for a, b in zip(results["one at a time"]["texts"], results["all at once"]["texts"]))
    ratio = results["all at once"]["tokens_per_s"] / results["one at a time"]["tokens_per_s"]
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "same_texts": same, "device": device_label, "ratio": ratio}, indent=1)
        )
    print(
        f"{args.prompts} chat requests x up to {max_tokens} tokens, greedy, model {args.model}, device {device_label}"
    )
    print("| side | generated tokens | seconds | tokens/s | p50 request s | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for side, r in results.items():
        print(f"| {side} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} | {r['p50_s']} | {r['errors']} |")
    print(f"identical greedy replies: {same}/{args.prompts}")
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
