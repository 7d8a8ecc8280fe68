"""LoRA SFT throughput: lmforge vs Hugging Face ``Trainer`` + ``peft``, in one run.

Both sides LoRA-tune the bundled SmolLM2-135M-Instruct (r 16, alpha 32, dropout 0.05, every linear
layer) on the same alpaca conversations, rendered by the same chat template with the same
assistant-only targets (lmforge's own encoding feeds both, so the data are token-for-token equal),
with the same AdamW, learning rate, linear schedule, warm-up, clipping, seed and threads, on the same
device (``--device``, default cpu: lmforge's ``device``, the Trainer's ``use_cpu`` or its one visible
GPU) -- and the same number of optimizer steps over the same tokens:

* lmforge packs the conversations into rows of ``--max-length`` tokens (position ids restart at
  each conversation, so none attends to another), batches ``--batch-size`` rows, and projects onto
  the 49k-token vocabulary only at the positions that have a target (the assistant's tokens);
* the Trainer + peft baseline batches conversations padded to the longest in the batch
  (``DataCollatorForSeq2Seq``, the usual SFT recipe), with as many conversations per batch as make
  its step count equal lmforge's, and computes logits at every position;
* TRL's ``SFTTrainer`` (where ``trl`` is installed: ``pip install trl``) packs the same encoded
  conversations best-fit-decreasing into rows of ``--max-length`` tokens without padding, position
  ids restarting per conversation -- the strongest SFT recipe of the Hugging Face stack on CPU.

Each baseline runs in fp32 and, where the CPU computes bf16 natively (AVX512-BF16 or AMX), also with
``bf16=True``; lmforge runs with ``train.precision: auto`` (it measures both and keeps the faster);
on a GPU every side trains in fp32. The ratio is taken against the fastest baseline.

Reported: real (non-pad) tokens per second of the training loop alone (lmforge: the run's
``training.wall_time_s``; baseline: ``trainer.train()``), and both models' loss on held-out
conversations (the same evaluation code for both, in fp32: the yardstick of quality) -- the loss
curves match when these agree. Each side runs in a fresh Python process of its own; its end-to-end
time is that process's wall time from launch to exit (imports, loading, encoding, training, and the
tool's own evaluation of the held-out conversations: lmforge's validation pass, the Trainer's
``evaluate()``, each in its training precision), less the yardstick's time, which no user of either
tool waits for (printed beside it); so no side starts with the libraries, kernels or caches another
warmed (``--in-process``: all in one process, each timed from its call).

    python bench/sft_throughput.py --quick      # 32 conversations, ~10 minutes on 2 cores
    python bench/sft_throughput.py              # 800 conversations
    python bench/sft_throughput.py --device cuda   # both sides on the GPU

The last line printed is ``ratio: X.XX`` = lmforge tokens/s / strongest baseline tokens/s.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from _common import (
    add_training_args,
    closing_lines,
    end_to_end_note,
    keep_argv,
    ratio,
    reduced_precision,
    resolve_device,
    run_and_report,
    run_precision,
    run_side,
    strongest,
    train_lmforge,
    training_arguments,
    training_overrides,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/instructions"
HF_SFT = "HF Trainer + peft (pad to longest)"
TRL_SFT = "TRL SFTTrainer + peft (packed, padding-free)"
QUICK_ROWS, FULL_ROWS, HELD_OUT = 32, 800, 48


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help="folder with alpaca_en_demo.json (default: %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} training conversations")
    parser.add_argument("--train-rows", type=int, default=None)
    add_training_args(parser, lr=5e-4, batch_size=2)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)  # internal: lmforge's, for the Trainer side
    parser.set_defaults(max_length=512, warmup=0.1, weight_decay=0.0)
    args = parser.parse_args(argv)
    if args.train_rows is None:
        args.train_rows = QUICK_ROWS if args.quick else FULL_ROWS
    args.device, args.device_label = resolve_device(args.device)
    keep_argv(args, argv)
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
    """lmforge's side: ``lmforge train`` with the held-out conversations as its validation set (its
    own evaluation, in the training's precision, counted end to end like the baselines' ``evaluate``),
    then the shared fp32 held-out loss on the saved model (the yardstick, not counted)."""
    from lmforge.runtime import set_threads

    path, total, meta = train_lmforge(
        [
            "task=causal_lm",
            "model=smollm2",
            f"data.train={json.dumps(str(train_path))}",
            f"data.validation={json.dumps(str(held))}",
            "tuning.method=lora",
            "tuning.r=16",
            "tuning.alpha=32",
            "tuning.dropout=0.05",
            "tuning.target=all-linear",
            *training_overrides(args, threads, out),
        ]
    )
    loop = meta["training"]["wall_time_s"]
    own = json.loads((path / "eval_results.json").read_text(encoding="utf-8"))
    started = time.perf_counter()
    set_threads(threads)
    from lmforge.inference.generator import Generator

    generator = Generator(str(path), "model", args.device)
    tokens = sum(len(ids) for ids, _ in encoded(generator.tokenizer, train_path, args.max_length)) * args.epochs
    held_out = held_out_loss(generator.model, generator.tokenizer, held, args.max_length, args.device)
    return {
        "tokens_per_s": tokens / loop,
        "loop_s": loop,
        "total_s": total,
        "tokens": tokens,
        "steps": meta["training"]["steps"],
        "own_eval_loss": own.get("loss", own.get("validation", {}).get("loss")),
        "held_out_loss": held_out,
        "yardstick_s": time.perf_counter() - started,
        "precision": run_precision(path),
    }


def lora_config():
    import peft

    return peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM, r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear"
    )


def smollm2(args, threads: int):
    """The baselines' tokenizer and fp32 model, after setting their threads and seed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.models.bundled import bundled_path

    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    folder = bundled_path("smollm2")
    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def run_hf(train_path, held, args, threads, steps: int, out, bf16: bool = False) -> dict:
    import peft
    from transformers import DataCollatorForSeq2Seq, Trainer

    start_total = time.perf_counter()
    tokenizer, model = smollm2(args, threads)
    model = peft.get_peft_model(model, lora_config())
    rows = encoded(tokenizer, train_path, args.max_length)
    dataset = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels} for ids, labels in rows]
    per_step = max(1, math.ceil(len(dataset) / max(steps // args.epochs, 1)))
    hf_args = training_arguments(argparse.Namespace(**{**vars(args), "batch_size": per_step}), out, bf16=bf16)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    evaluation = [
        {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
        for ids, labels in encoded(tokenizer, held, args.max_length)
    ]
    trainer = Trainer(model=model, args=hf_args, train_dataset=dataset, eval_dataset=evaluation, data_collator=collator)
    return {**timed(trainer, tokenizer, rows, held, args, start_total, bf16), "batch_size": per_step}


def timed(trainer, tokenizer, rows, held, args, start_total: float, bf16: bool) -> dict:
    """Train and evaluate with a baseline's ``trainer`` (printing nothing) and measure it as lmforge
    is measured: ``trainer.evaluate()`` on the held-out conversations is the tool's own evaluation
    (in its training precision, counted end to end); the shared fp32 held-out loss after it is the
    yardstick (not counted)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    loop = time.perf_counter() - start
    own = trainer.evaluate()
    tokens = sum(len(ids) for ids, _ in rows) * args.epochs
    total = time.perf_counter() - start_total
    started = time.perf_counter()
    held_out = held_out_loss(trainer.model, tokenizer, held, args.max_length, args.device)
    return {
        "tokens_per_s": tokens / loop,
        "loop_s": loop,
        "total_s": total,
        "tokens": tokens,
        "steps": trainer.state.global_step,
        "own_eval_loss": own.get("eval_loss"),
        "held_out_loss": held_out,
        "yardstick_s": time.perf_counter() - started,
        "precision": "bf16" if bf16 else "fp32",
    }


def trl_missing() -> str | None:
    """Why TRL cannot run here (None when it can)."""
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed (pip install trl)"
    return None


def run_trl(train_path, held, args, threads, out, bf16: bool = False) -> dict:
    """TRL's ``SFTTrainer`` at its fastest on these data: the same encoded conversations (ids and
    assistant-only labels), packed best-fit-decreasing into rows of ``--max-length`` tokens without
    padding (``packing_strategy="bfd"``: position ids restart at each conversation, and transformers
    builds the block-diagonal mask from them), ``--batch-size`` rows a step, no gradient checkpointing."""
    import datasets
    import trl

    start_total = time.perf_counter()
    tokenizer, model = smollm2(args, threads)
    rows = encoded(tokenizer, train_path, args.max_length)
    dataset = datasets.Dataset.from_list([{"input_ids": ids, "labels": labels} for ids, labels in rows])
    evaluation = datasets.Dataset.from_list(
        [{"input_ids": ids, "labels": labels} for ids, labels in encoded(tokenizer, held, args.max_length)]
    )
    config = training_arguments(
        args,
        out,
        bf16=bf16,
        kind=trl.SFTConfig,
        max_length=args.max_length,
        packing=True,
        packing_strategy="bfd",
        gradient_checkpointing=False,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    return timed(trainer, tokenizer, rows, held, args, start_total, bf16)


def report(results: dict) -> list[str]:
    sides = {name: r for name, r in results.items() if not name.startswith("_")}
    lines = [
        "| side | precision | real tokens/s | train loop (s) | optimizer steps | held-out loss (fp32) "
        "| own evaluation's loss |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in sides.items():
        own = r.get("own_eval_loss")
        lines.append(
            f"| {name} | {r['precision']} | {r['tokens_per_s']:.1f} | {r['loop_s']:.1f} | {r['steps']} "
            f"| {r['held_out_loss']:.4f} | {'n/a' if own is None else f'{own:.4f}'} |"
        )
    lines.append("")
    for name, r in sides.items():
        whole = f" ({r['with_yardstick_s']:.1f} s with the fp32 held-out loss)" if "with_yardstick_s" in r else ""
        lines.append(f"{name}: end-to-end {r['total_s']:.1f} s{whole}, {r['tokens']:,} real training tokens")
    lines.append(
        f"({end_to_end_note(sides)}; each side's own evaluation of the held-out conversations (lmforge's "
        "validation pass, the Trainer's evaluate()) counts, the shared fp32 held-out loss that compares "
        "their quality does not)"
    )
    if results.get("_trl_missing"):
        lines.append(f"TRL not measured: {results['_trl_missing']}")
    best = strongest(sides, "tokens_per_s")
    if best:
        lines.append(f"strongest baseline precision: {sides[best]['precision']}")
    loss = sides["lmforge"]["held_out_loss"] - sides[best]["held_out_loss"] if best else 0.0
    return lines + closing_lines(sides, "held-out loss", f"{loss:+.4f}", key="tokens_per_s")


def sft_ratio(results: dict) -> float | None:
    """lmforge's tokens/s over the strongest baseline's."""
    return ratio({k: v for k, v in results.items() if not k.startswith("_")}, key="tokens_per_s")


def without_yardstick(side: dict) -> dict:
    """A side's results with its end to end counted without the shared fp32 held-out loss (run in the
    side's process after its own evaluation; ``with_yardstick_s`` keeps the process's whole time)."""
    if "in_process_s" in side:  # its own process: total_s is that process's launch-to-exit time
        side["with_yardstick_s"] = side["total_s"]
        side["total_s"] = side["total_s"] - side["yardstick_s"]
    return side


def lmforge_side(args, out: Path) -> dict:
    """lmforge on the conversations ``run`` wrote beside the side's folder."""
    return run_lmforge(out.parent / "train.json", out.parent / "held.json", args, torch.get_num_threads(), out / "run")


def trainer_side(bf16: bool):
    def side(args, out: Path) -> dict:
        files = out.parent / "train.json", out.parent / "held.json"
        return run_hf(*files, args, torch.get_num_threads(), args.steps, out, bf16)

    return side


def trl_side(bf16: bool):
    def side(args, out: Path) -> dict:
        return run_trl(out.parent / "train.json", out.parent / "held.json", args, torch.get_num_threads(), out, bf16)

    return side


SIDES = {
    "lmforge": lmforge_side,
    HF_SFT: trainer_side(False),
    HF_SFT + " bf16": trainer_side(True),
    TRL_SFT: trl_side(False),
    TRL_SFT + " bf16": trl_side(True),
}


def run(args, out: Path) -> dict:
    train_path, held = conversations(args, out)
    threads = torch.get_num_threads()
    print(
        f"alpaca_en_demo: {args.train_rows} training conversations, {HELD_OUT} held out; max_length "
        f"{args.max_length}, {args.epochs} epoch(s), lr {args.lr}, batch {args.batch_size} packed rows, "
        f"seed {args.seed}, {threads} torch threads; device {args.device_label}",
        flush=True,
    )
    results = {"lmforge": without_yardstick(run_side(__file__, args, "lmforge", out / "lmforge", SIDES["lmforge"]))}
    print(
        f"lmforge done: {results['lmforge']['loop_s']:.1f} s training loop, {results['lmforge']['steps']} steps",
        flush=True,
    )
    if not args.skip_hf:
        args.steps = results["lmforge"]["steps"]  # the Trainer takes as many optimizer steps
        steps = ("--steps", str(args.steps))
        precisions = [False] + ([True] if reduced_precision(args.device) == "bf16" else [])
        for bf16 in precisions:
            name = HF_SFT + (" bf16" if bf16 else "")
            results[name] = without_yardstick(
                run_side(__file__, args, name, out / f"hf{'-bf16' * bf16}", SIDES[name], steps)
            )
            print(f"{name} done: {results[name]['loop_s']:.1f} s training loop", flush=True)
        missing = trl_missing()
        if missing:
            results["_trl_missing"] = missing
        for bf16 in precisions if not missing else []:
            name = TRL_SFT + (" bf16" if bf16 else "")
            results[name] = without_yardstick(run_side(__file__, args, name, out / f"trl{'-bf16' * bf16}", SIDES[name]))
            print(f"{name} done: {results[name]['loop_s']:.1f} s training loop", flush=True)
    return {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "results": results}


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), "alpaca", ("alpaca_en_demo.json",), run, report, sft_ratio, sides=SIDES)


if __name__ == "__main__":
    sys.exit(main())
