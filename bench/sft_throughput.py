"""LoRA SFT throughput: lmforge vs Hugging Face ``Trainer`` + ``peft``, in one run.

Both sides LoRA-tune the bundled SmolLM2-135M-Instruct (r 16, alpha 32, dropout 0.05, every linear
layer) on the same alpaca conversations, rendered by the same chat template with the same
assistant-only targets (lmforge's own encoding feeds both, so the data are token-for-token equal),
with the same AdamW, learning rate, linear schedule, warm-up, clipping, seed and threads, on the same
device (``--device``, default cpu: lmforge's ``device``, the Trainer's ``use_cpu`` or its one visible
GPU; on a GPU both train in fp32) -- and the same number of optimizer steps over the same tokens:

* lmforge packs the conversations into rows of ``--max-length`` tokens (position ids restart at
  each conversation, so none attends to another), batches ``--batch-size`` rows, and projects onto
  the 49k-token vocabulary only at the positions that have a target (the assistant's tokens);
* the baseline batches conversations padded to the longest in the batch (``DataCollatorForSeq2Seq``,
  the usual SFT recipe), with as many conversations per batch as make its step count equal
  lmforge's, and computes logits at every position.

Reported: real (non-pad) tokens per second of the training loop alone (lmforge: the run's
``training.wall_time_s``; baseline: ``trainer.train()``), and both models' loss on held-out
conversations (the same evaluation code for both) -- the loss curves match when these agree.

    python bench/sft_throughput.py --quick      # 32 conversations, ~4.5 minutes on 2 cores
    python bench/sft_throughput.py              # 800 conversations
    python bench/sft_throughput.py --device cuda   # both sides on the GPU

The last line printed is ``ratio: X.XX`` = lmforge tokens/s / baseline tokens/s.
"""

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import torch

from _common import add_training_args, lmforge_device, ratio, resolve_device, run_and_report, training_arguments

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/instructions"
HF_SFT = "HF Trainer + peft (pad to longest)"
QUICK_ROWS, FULL_ROWS, HELD_OUT = 32, 800, 48


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help="folder with alpaca_en_demo.json (default: %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} training conversations")
    parser.add_argument("--train-rows", type=int, default=None)
    add_training_args(parser, lr=5e-4, batch_size=2)
    parser.set_defaults(max_length=512, warmup=0.1, weight_decay=0.0)
    args = parser.parse_args(argv)
    if args.train_rows is None:
        args.train_rows = QUICK_ROWS if args.quick else FULL_ROWS
    args.device, args.device_label = resolve_device(args.device)
    return args


def conversations(args, out: Path):
    rows = json.loads((args.data_dir / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    held, train = rows[:HELD_OUT], rows[HELD_OUT : HELD_OUT + args.train_rows]
    (out / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    (out / "held.json").write_text(json.dumps(held, ensure_ascii=False), encoding="utf-8")
    return out / "train.json", out / "held.json"


def encoded(tokenizer, path: Path, max_length: int) -> list[tuple[list[int], list[int]]]:
    """lmforge's rendering and targets, truncated to max_length: the data both sides train on."""
    from lmforge.config.schema import DataConfig
    from lmforge.data.conversations import read_conversations
    from lmforge.data.readers import Problems
    from lmforge.tasks.causal_lm import encode_conversations

    rows = encode_conversations(tokenizer, read_conversations(str(path), DataConfig(), Problems()))
    return [(ids[:max_length], labels[:max_length]) for ids, labels in rows]


def held_out_loss(model, tokenizer, held: Path, max_length: int, device: str) -> float:
    from lmforge.config.schema import DataConfig
    from lmforge.data.conversations import read_conversations
    from lmforge.data.readers import Problems
    from lmforge.tasks.causal_lm import CausalLMTask

    task = CausalLMTask()
    task.mode, task.packing = "chat", False
    rows = read_conversations(str(held), DataConfig(), Problems())
    features = task.encode(tokenizer, rows, max_length)
    return task.evaluate(model.eval(), tokenizer, features, rows, 8, torch.device(device)).metrics["loss"]


def run_lmforge(train_path, held, args, threads, out) -> dict:
    from lmforge.config import load_config
    from lmforge.inference.generator import Generator
    from lmforge.runtime import set_threads
    from lmforge.training.recipe import train

    q = json.dumps
    config = load_config(
        None,
        [
            "task=causal_lm",
            "model=smollm2",
            f"data.train={q(str(train_path))}",
            "tuning.method=lora",
            "tuning.r=16",
            "tuning.alpha=32",
            "tuning.dropout=0.05",
            "tuning.target=all-linear",
            f"train.epochs={args.epochs}",
            f"train.lr={args.lr}",
            f"train.batch_size={args.batch_size}",
            f"data.max_length={args.max_length}",
            f"train.warmup={args.warmup}",
            f"train.weight_decay={args.weight_decay}",
            "train.max_grad_norm=1.0",
            "train.scheduler=linear",
            f"train.seed={args.seed}",
            f"train.threads={threads}",
            f"output={q(str(out))}",
            "overwrite=true",
            *lmforge_device(args.device),
        ],
    )
    start = time.perf_counter()
    outcome = train(config, quiet=True)
    total = time.perf_counter() - start
    meta = json.loads((outcome.run.path / "lmforge.json").read_text(encoding="utf-8"))
    set_threads(threads)
    generator = Generator(str(outcome.run.path), "model", args.device)
    tokens = sum(len(ids) for ids, _ in encoded(generator.tokenizer, train_path, args.max_length)) * args.epochs
    loop = meta["training"]["wall_time_s"]
    return {
        "tokens_per_s": tokens / loop,
        "loop_s": loop,
        "total_s": total,
        "tokens": tokens,
        "steps": meta["training"]["steps"],
        "held_out_loss": held_out_loss(generator.model, generator.tokenizer, held, args.max_length, args.device),
    }


def run_hf(train_path, held, args, threads, steps: int, out) -> dict:
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer
    from transformers.trainer_callback import PrinterCallback

    from lmforge.models.bundled import bundled_path

    start_total = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    folder = bundled_path("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = peft.get_peft_model(
        model,
        peft.LoraConfig(
            task_type=peft.TaskType.CAUSAL_LM, r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear"
        ),
    )
    rows = encoded(tokenizer, train_path, args.max_length)
    dataset = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels} for ids, labels in rows]
    per_step = max(1, math.ceil(len(dataset) / max(steps // args.epochs, 1)))
    hf_args = training_arguments(argparse.Namespace(**{**vars(args), "batch_size": per_step}), out)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=hf_args, train_dataset=dataset, data_collator=collator)
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    loop = time.perf_counter() - start
    tokens = sum(len(r["input_ids"]) for r in dataset) * args.epochs
    return {
        "tokens_per_s": tokens / loop,
        "loop_s": loop,
        "total_s": time.perf_counter() - start_total,
        "tokens": tokens,
        "steps": trainer.state.global_step,
        "batch_size": per_step,
        "held_out_loss": held_out_loss(trainer.model, tokenizer, held, args.max_length, args.device),
    }


def report(results: dict) -> list[str]:
    lines = ["| side | real tokens/s | train loop (s) | optimizer steps | held-out loss |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['tokens_per_s']:.1f} | {r['loop_s']:.1f} | {r['steps']} | {r['held_out_loss']:.4f} |"
        )
    lines.append("")
    for name, r in results.items():
        lines.append(f"{name}: end-to-end {r['total_s']:.1f} s, {r['tokens']:,} real training tokens")
    if HF_SFT not in results:
        return lines + ["ratio: n/a (baseline skipped)"]
    lm, hf = results["lmforge"], results[HF_SFT]
    lines.append(f"held-out loss difference (lmforge - HF): {lm['held_out_loss'] - hf['held_out_loss']:+.4f}")
    return lines + [f"ratio: {sft_ratio(results):.2f}"]


sft_ratio = partial(ratio, key="tokens_per_s", baseline=HF_SFT)


def run(args, out: Path) -> dict:
    train_path, held = conversations(args, out)
    threads = torch.get_num_threads()
    print(
        f"alpaca_en_demo: {args.train_rows} training conversations, {HELD_OUT} held out; max_length "
        f"{args.max_length}, {args.epochs} epoch(s), lr {args.lr}, batch {args.batch_size} packed rows, "
        f"seed {args.seed}, {threads} torch threads; device {args.device_label}",
        flush=True,
    )
    results = {"lmforge": run_lmforge(train_path, held, args, threads, out / "lmforge-run")}
    print(
        f"lmforge done: {results['lmforge']['loop_s']:.1f} s training loop, {results['lmforge']['steps']} steps",
        flush=True,
    )
    if not args.skip_hf:
        results[HF_SFT] = run_hf(train_path, held, args, threads, results["lmforge"]["steps"], out / "hf")
    return {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "results": results}


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), "alpaca", ("alpaca_en_demo.json",), run, report, sft_ratio)


if __name__ == "__main__":
    sys.exit(main())
