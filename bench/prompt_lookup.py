"""Speculative decoding by prompt lookup (``generate --prompt-lookup N``, off by default) on
SmolLM2-135M-Instruct: grounded instructions (alpaca rows with an input text: rewrite, summarize,
extract) and open ones (no input), batch 1, greedy, against Hugging Face ``model.generate()`` in
float32 without it, in one run.

Sides: ``generate()`` fp32 (the baseline); lmforge's PyTorch engine in float32 and in int8 weights
(``--dtype int8``), each without and with prompt lookup. Reported: tokens/s per prompt kind, and how
many replies are token for token the ones the same side gives without prompt lookup.

    python bench/prompt_lookup.py --quick     # 4 prompts of each kind, 64 tokens
    python bench/prompt_lookup.py             # 8 of each, 128 tokens

The last line is ``ratio: X`` = lmforge int8 with prompt lookup over ``generate()`` fp32, tokens/s
on the grounded prompts.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_device_arg, resolve_device  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "instructions" / "alpaca_en_demo.json"
CPU_ONLY = "the int8 weights run on the CPU"


def prompts_of(count: int) -> dict[str, list[str]]:
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    grounded = [f"{r['instruction']}\n\n{r['input']}" for r in rows if len(r["input"]) >= 150][:count]
    open_ = [r["instruction"] for r in rows if not r["input"]][:count]
    return {"grounded": grounded, "open": open_}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lookup", type=int, default=10, help="tokens proposed a step")
    add_device_arg(parser, cpu_only=CPU_ONLY)
    args = parser.parse_args(argv)
    resolve_device(args.device, cpu_only=CPU_ONLY)
    count, new_tokens = (4, 64) if args.quick else (8, 128)

    import transformers

    from lmforge.inference.generator import Generator
    from lmforge.models.decoding import GenerationOptions
    from lmforge.runtime import quiet_libraries, set_threads

    quiet_libraries()
    threads = set_threads(None)
    kinds = prompts_of(count)
    sides = {
        "lmforge fp32": Generator("smollm2", device="cpu"),
        f"lmforge fp32 + lookup {args.lookup}": Generator("smollm2", device="cpu", prompt_lookup=args.lookup),
        "lmforge int8": Generator("smollm2", device="cpu", dtype="int8"),
        f"lmforge int8 + lookup {args.lookup}": Generator(
            "smollm2", device="cpu", dtype="int8", prompt_lookup=args.lookup
        ),
    }
    plain = next(iter(sides.values()))
    baseline = transformers.AutoModelForCausalLM.from_pretrained(plain.folder, dtype=torch.float32).eval()
    options = GenerationOptions(max_new_tokens=new_tokens)
    print(f"SmolLM2-135M-Instruct, {count} prompts of each kind, up to {new_tokens} tokens, greedy, {threads} threads")
    names = ["model.generate() fp32", *sides]
    rates: dict[str, dict[str, float]] = {name: {} for name in names}
    same: dict[str, dict[str, int]] = {name: {} for name in names}
    for kind, prompts in kinds.items():
        totals = {name: [0, 0.0] for name in names}
        replies: dict[str, list[str]] = {name: [] for name in names}
        for prompt in prompts:
            ids = plain.encode(prompt)
            start = time.perf_counter()
            with torch.inference_mode():
                out = baseline.generate(
                    torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=plain.stop_ids
                )
            totals[names[0]][1] += time.perf_counter() - start
            totals[names[0]][0] += out.shape[1] - len(ids)
            for name, side in sides.items():
                result = side.generate(prompt, options)
                totals[name][0] += result.new_tokens
                totals[name][1] += result.seconds
                replies[name].append(result.text)
        for name in names:
            rates[name][kind] = totals[name][0] / totals[name][1]
        for name in sides:
            without = name.split(" + ")[0]
            same[name][kind] = sum(a == b for a, b in zip(replies[name], replies[without]))
    print("| side | grounded tokens/s | open tokens/s | same reply as without lookup |")
    print("|---|---:|---:|---:|")
    for name in names:
        agree = f"{same[name]['grounded']}/{count}, {same[name]['open']}/{count}" if " + " in name else ""
        print(f"| {name} | {rates[name]['grounded']:.1f} | {rates[name]['open']:.1f} | {agree} |")
    best = f"lmforge int8 + lookup {args.lookup}"
    print(f"open prompts: {rates[best]['open'] / rates[names[0]]['open']:.2f}x generate() fp32")
    print(f"ratio: {rates[best]['grounded'] / rates[names[0]]['grounded']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
