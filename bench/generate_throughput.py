"""Decoding speed at batch 1: ``lmforge generate`` vs plain ``model.generate()``, in one run.

Both sides load the bundled SmolLM2-135M-Instruct (float32), render the same alpaca instructions with
its chat template, and decode greedily up to ``--max-new-tokens`` with the same threads on the same
device (``--device``, default cpu: ``Generator(..., device)`` and the baseline's ``.to(device)``; on a
GPU each side first decodes one untimed prompt, so CUDA's start-up falls on neither); each prompt
is decoded once by each side, alternating sides so neither gets a warmer cache. lmforge's path is
``Generator.generate`` (``torch.inference_mode``, KV cache, stop ids from tokenizer and generation
config); the baseline is the two-liner a user would write: ``tokenizer.apply_chat_template`` then
``model.generate(ids, max_new_tokens=N, do_sample=False)``. Reported: new tokens per second of
decoding for each side, and whether the greedy texts are identical (they must be).

    python bench/generate_throughput.py --quick     # 3 prompts x 32 tokens
    python bench/generate_throughput.py             # 8 prompts x 128 tokens
    python bench/generate_throughput.py --device cuda

The last line printed is ``ratio: X.XX`` = lmforge tokens/s / baseline tokens/s.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from _common import add_device_arg, resolve_device, synchronize

PROMPTS = [
    "Give three tips for staying healthy.",
    "What are the three primary colors?",
    "Describe the structure of an atom.",
    "How can we reduce air pollution?",
    "Explain why the sky is blue.",
    "Write a short poem about the sea.",
    "What is the capital of Japan, and what is it known for?",
    "Summarize the plot of Cinderella.",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 prompts, 32 new tokens each")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    add_device_arg(parser)
    args = parser.parse_args(argv)
    device, device_label = resolve_device(args.device)
    new_tokens = args.max_new_tokens or (32 if args.quick else 128)
    prompts = PROMPTS[: args.prompts or (3 if args.quick else len(PROMPTS))]

    from lmforge.inference.generator import Generator
    from lmforge.models.decoding import GenerationOptions
    from lmforge.runtime import quiet_libraries, set_threads

    quiet_libraries()
    set_threads(args.threads)
    lmforge = Generator("smollm2", device=device)
    threads = torch.get_num_threads()
    import transformers

    baseline = transformers.AutoModelForCausalLM.from_pretrained(lmforge.folder, dtype=torch.float32)
    baseline = baseline.to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(lmforge.folder)
    print(
        f"SmolLM2-135M-Instruct fp32, {len(prompts)} prompts, up to {new_tokens} new tokens, greedy, "
        f"batch 1, {threads} threads, device {device_label}",
        flush=True,
    )

    def chat_ids(prompt: str) -> torch.Tensor:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"].to(device)

    if device != "cpu":  # untimed: CUDA's kernels and cuBLAS start on this, not on the first side timed
        lmforge.generate(PROMPTS[0], GenerationOptions(max_new_tokens=8))
        baseline.generate(chat_ids(PROMPTS[0]), max_new_tokens=8, do_sample=False)
    totals = {"lmforge": [0, 0.0], "model.generate()": [0, 0.0]}
    same = 0
    for prompt in prompts:
        result = lmforge.generate(prompt, GenerationOptions(max_new_tokens=new_tokens))
        totals["lmforge"][0] += result.new_tokens
        totals["lmforge"][1] += result.seconds
        ids = chat_ids(prompt)
        synchronize(device)
        start = time.perf_counter()
        out = baseline.generate(ids, max_new_tokens=new_tokens, do_sample=False)
        synchronize(device)
        seconds = time.perf_counter() - start
        new = out[0, ids.shape[1] :]
        totals["model.generate()"][0] += len(new)
        totals["model.generate()"][1] += seconds
        same += tokenizer.decode(new, skip_special_tokens=True).strip() == result.text.strip()
    rates = {name: n / s for name, (n, s) in totals.items()}
    print("| side | new tokens | decode time (s) | tokens/s |\n|---|---:|---:|---:|")
    for name, (n, s) in totals.items():
        print(f"| {name} | {n} | {s:.1f} | {rates[name]:.2f} |")
    print(f"identical greedy texts: {same}/{len(prompts)}")
    ratio = rates["lmforge"] / rates["model.generate()"]
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "totals": totals,
                    "tokens_per_s": rates,
                    "identical": same,
                    "threads": threads,
                    "device": device_label,
                    "ratio": ratio,
                },
                indent=1,
            )
        )
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
