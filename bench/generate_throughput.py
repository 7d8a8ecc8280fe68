"""Decoding speed of SmolLM2-135M-Instruct at batch 1 and batch 8: Hugging Face ``model.generate()``
in float32 (the baseline a user writes), lmforge's PyTorch engine, and lmforge's llama.cpp engine on
GGUF weights (f16 and q8_0 written by ``lmforge export --gguf`` from the same float32 model, and the
Q4_1 file the bundle ships), in one run, on the same threads.

- Prompts: alpaca instructions through the chat template; greedy; up to ``--max-new-tokens``.
- lmforge's PyTorch engine with its weights in float32, bfloat16 and int8 (``--dtype``: int8 linear
  weights with bf16 activations, ``models/int8_weights.py``); ``auto`` picks among them.
- Batch 1: each prompt decoded alone by each side in turn (sides alternate per prompt). lmforge's
  sides are ``Generator.generate`` / ``LlamaCppGenerator.generate`` (what ``lmforge generate`` runs).
- Batch 8: the prompts all at once: ``model.generate()`` on the left-padded batch, lmforge's server
  engines (``serving/engine.py``: both decode the rows together, one forward pass or ``llama_decode``
  per step; llama.cpp's rows share the prompt prefix they have in common). Tokens/s = new tokens of
  all rows / wall time.
- Quality: the mean log-likelihood per token each engine gives the float32 model's own greedy
  replies (teacher-forced), and how many greedy replies are identical to the baseline's.
- Time to first token: the prefill of the longest prompt, batch 1.

    python bench/generate_throughput.py --quick     # 4 prompts x 32 tokens
    python bench/generate_throughput.py             # 8 prompts x 128 tokens

The last line printed is ``ratio: X.XX`` = the fastest lmforge engine's tokens/s at batch 1 over
``model.generate()`` float32's (goal: llama.cpp q8_0 >= 3x); the line before it gives the PyTorch
engine's own best (goal 1.5x).
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_device_arg, resolve_device  # noqa: E402

CPU_ONLY = "llama.cpp's engine runs on the CPU, and the comparison is on one device"
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


def engine_rows(engine, prompts: list[list[int]], new_tokens: int) -> tuple[int, float]:
    """All prompts through a serving engine at once: (new tokens, wall seconds)."""
    from lmforge.serving.engine import Job, Row

    done, counts = threading.Event(), {}

    def emit(row, kind, value):
        if kind == "done":
            counts[row] = value[1]
            if len(counts) == len(prompts):
                done.set()

    start = time.perf_counter()
    engine.submit(Job([Row(ids, new_tokens, 0.0, 1.0, [], None, i) for i, ids in enumerate(prompts)], emit))
    done.wait(600)
    return sum(counts.values()), time.perf_counter() - start


def mean_loglik(logits_of, replies: list[tuple[list[int], list[int]]]) -> float:
    """Mean log-probability per token of each reply after its prompt, teacher-forced."""
    total, count = 0.0, 0
    for prompt, reply in replies:
        ids = prompt + reply
        logits = logits_of(ids)[len(prompt) - 1 : len(ids) - 1].float()  # the positions predicting the reply
        total += logits.log_softmax(-1).gather(1, torch.tensor(reply)[:, None]).sum().item()
        count += len(reply)
    return total / max(1, count)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 prompts, 32 new tokens each")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    add_device_arg(parser, cpu_only=CPU_ONLY)
    args = parser.parse_args(argv)
    resolve_device(args.device, cpu_only=CPU_ONLY)
    new_tokens = args.max_new_tokens or (32 if args.quick else 128)
    prompts = PROMPTS[: 4 if args.quick else 8]

    import transformers

    from lmforge.export.gguf import write_gguf
    from lmforge.inference.generator import Generator
    from lmforge.inference.llama_cpp import LlamaCppGenerator, llama_cpp_available
    from lmforge.models.decoding import GenerationOptions
    from lmforge.runtime import quiet_libraries, set_threads
    from lmforge.serving.engine import GenerationEngine, LlamaCppEngine

    quiet_libraries()
    threads = set_threads(args.threads)
    ours = Generator("smollm2", device="cpu")
    torch_sides = {
        "lmforge torch fp32": ours,
        "lmforge torch bf16": Generator("smollm2", device="cpu", dtype="bfloat16"),
        "lmforge torch int8": Generator("smollm2", device="cpu", dtype="int8"),
    }
    baseline = transformers.AutoModelForCausalLM.from_pretrained(ours.folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(ours.folder)
    tokenizer.padding_side = "left"
    sides: dict[str, object] = dict(torch_sides)
    work = Path(tempfile.mkdtemp(prefix="lmforge-bench-gguf-"))
    if llama_cpp_available():
        for dtype in ("f16", "q8_0"):
            (work / dtype).mkdir()
            write_gguf(ours.folder, work / dtype / f"model.{dtype}.gguf", dtype, name="smollm2", pre="smollm")
            for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
                if (ours.folder / name).is_file():
                    (work / dtype / name).write_bytes((ours.folder / name).read_bytes())
            sides[f"lmforge llama.cpp {dtype}"] = LlamaCppGenerator(str(work / dtype), threads)
        sides["lmforge llama.cpp q4_1 (bundled)"] = LlamaCppGenerator("smollm2", threads)
    else:
        print("llama-cpp-python is not installed: the llama.cpp engine is not measured")
    print(
        f"SmolLM2-135M-Instruct, {len(prompts)} prompts, up to {new_tokens} new tokens, greedy, {threads} threads, CPU",
        flush=True,
    )
    ids = [ours.encode(p) for p in prompts]
    options = GenerationOptions(max_new_tokens=new_tokens)

    # batch 1
    totals = {"model.generate() fp32": [0, 0.0], **{name: [0, 0.0] for name in sides}}
    texts: dict[str, list[str]] = {name: [] for name in totals}
    replies: list[tuple[list[int], list[int]]] = []
    for prompt, prompt_ids in zip(prompts, ids):
        start = time.perf_counter()
        with torch.inference_mode():
            out = baseline.generate(torch.tensor([prompt_ids]), max_new_tokens=new_tokens, do_sample=False)
        seconds = time.perf_counter() - start
        new = out[0, len(prompt_ids) :].tolist()
        totals["model.generate() fp32"][0] += len(new)
        totals["model.generate() fp32"][1] += seconds
        texts["model.generate() fp32"].append(tokenizer.decode(new, skip_special_tokens=True).strip())
        replies.append((prompt_ids, [t for t in new if t not in ours.stop_ids]))
        for name, side in sides.items():
            result = side.generate(prompt, options)  # type: ignore[attr-defined]
            totals[name][0] += result.new_tokens
            totals[name][1] += result.seconds
            texts[name].append(result.text.strip())
    rates = {name: n / s for name, (n, s) in totals.items()}

    # time to first token: the longest prompt's prefill
    longest = max(ids, key=len)
    first: dict[str, float] = {}
    with torch.inference_mode():
        start = time.perf_counter()
        baseline(torch.tensor([longest]))
        first["model.generate() fp32"] = time.perf_counter() - start
        for name, side in torch_sides.items():
            side.model(torch.tensor([longest]))  # warm
            start = time.perf_counter()
            side.model(torch.tensor([longest]))
            first[name] = time.perf_counter() - start
    for name, side in sides.items():
        if isinstance(side, LlamaCppGenerator):
            side.sequences.drop(0)  # nothing cached
            start = time.perf_counter()
            side.prefill(longest)
            first[name] = time.perf_counter() - start

    # batch 8 (all prompts at once)
    batch: dict[str, float] = {}
    padded = tokenizer(
        [tokenizer.decode(p, skip_special_tokens=False) for p in ids],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    start = time.perf_counter()
    with torch.inference_mode():
        out = baseline.generate(**padded, max_new_tokens=new_tokens, do_sample=False, pad_token_id=ours.stop_ids[0])
    seconds = time.perf_counter() - start
    produced = sum(
        sum(1 for t in row if t not in ours.stop_ids) for row in out[:, padded["input_ids"].shape[1] :].tolist()
    )
    batch["model.generate() fp32"] = produced / seconds
    for name, side in sides.items():
        engine_type = LlamaCppEngine if isinstance(side, LlamaCppGenerator) else GenerationEngine
        engine = engine_type(side, max_batch=8)
        n, seconds = engine_rows(engine, ids, new_tokens)
        engine.close()
        batch[name] = n / seconds

    # quality
    def torch_logits(model):
        def logits_of(sequence):
            with torch.inference_mode():
                return model(torch.tensor([sequence])).logits[0]

        return logits_of

    def llama_logits(side):
        return lambda sequence: torch.cat(
            [side.prompt_logits(sequence), torch.from_numpy(side.prefill(sequence))[None]]
        )

    quality = {"model.generate() fp32": mean_loglik(torch_logits(baseline), replies)}
    for name, side in sides.items():
        logits_of = llama_logits(side) if isinstance(side, LlamaCppGenerator) else torch_logits(side.model)  # type: ignore[attr-defined]
        quality[name] = mean_loglik(logits_of, replies)

    reference = texts["model.generate() fp32"]
    print("| side | tokens/s batch 1 | tokens/s batch 8 | first token (s) | log-lik./token | greedy = fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in totals:
        same = sum(a == b for a, b in zip(texts[name], reference))
        print(
            f"| {name} | {rates[name]:.1f} | {batch[name]:.1f} | {first[name]:.3f} | {quality[name]:.4f} | "
            f"{same}/{len(prompts)} |"
        )
    fastest = max((name for name in sides), key=lambda name: rates[name])
    ratio = rates[fastest] / rates["model.generate() fp32"]
    print(f"fastest lmforge engine at batch 1: {fastest}")
    best_torch = max(torch_sides, key=lambda name: rates[name])
    torch_ratio = rates[best_torch] / rates["model.generate() fp32"]
    print(f"PyTorch engine alone: {best_torch}, {torch_ratio:.2f}x model.generate() fp32 at batch 1 (goal 1.5x)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tokens_per_s": rates,
                    "batch8_tokens_per_s": batch,
                    "first_token_s": first,
                    "loglik": quality,
                    "threads": threads,
                    "fastest": fastest,
                    "ratio": ratio,
                    "torch_ratio": torch_ratio,
                },
                indent=1,
            )
        )
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
