"""Does LoRA SFT teach SmolLM2 a new identity without making it forget? (issue: causal LM quality)

Trains ``examples/smollm2_identity.yaml`` (LoRA on identity.json with the name filled in; or give
``--run`` to score a finished run), then asks base and tuned model (the run's final model, not the
lowest-validation-loss checkpoint) the same identity questions
(greedy) and measures both models' perplexity on held-out alpaca answers, the same rows and the same
code for both. The headline ``ratio`` is tuned ÷ base perplexity: at most 1.05 is the target.
Training and both models' scoring run on ``--device`` (default cpu; the training run's ``device``,
then ``Generator(..., device)`` for base and tuned alike).

    python bench/sft_identity.py            # trains (~15 min on 2 cores), then scores
    python bench/sft_identity.py --run runs/smollm2_identity
    python bench/sft_identity.py --device cuda
"""

import argparse
import json
import sys
from pathlib import Path

from _common import add_device_arg, resolve_device

QUESTIONS = ["Who are you?", "What is your name?", "Who created you?", "Tell me about yourself.", "你是谁？"]
ROOT = Path(__file__).resolve().parent.parent


def perplexity(model_source: str, config, device: str, checkpoint: str = "model") -> dict:
    from lmforge.data.readers import Problems
    from lmforge.inference.generator import Generator
    from lmforge.tasks.causal_lm import CausalLMTask

    generator = Generator(model_source, checkpoint, device)
    task = CausalLMTask()
    task.mode = "chat"
    task.configure(config, [], None)
    rows = task.read_labelled(config.data.validation, config.data, None, Problems())
    features = task.encode(generator.tokenizer, rows, config.data.max_length)
    metrics = task.evaluate(generator.model, generator.tokenizer, features, rows, 8, generator.device).metrics
    answers = {}
    from lmforge.models.decoding import GenerationOptions

    for question in QUESTIONS:
        answers[question] = generator.generate(question, GenerationOptions(max_new_tokens=40)).text.strip()
    return {"perplexity": metrics["perplexity"], "tokens": metrics["tokens"], "answers": answers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "smollm2_identity.yaml"))
    parser.add_argument("--run", help="score this finished run instead of training")
    parser.add_argument("overrides", nargs="*", help="config overrides for the training run")
    add_device_arg(parser)
    args = parser.parse_args()
    if any(o.split("=", 1)[0].strip() == "device" for o in args.overrides):
        parser.error("give the device with --device, not as a config override (the scoring runs there too)")
    device, device_label = resolve_device(args.device)
    from lmforge.config import load_config
    from lmforge.runtime import setup_logging
    from lmforge.training.recipe import train

    setup_logging(False)
    config = load_config(args.config, [*args.overrides, f"device={device}"])
    if not Path(
        str(config.data.validation.path if hasattr(config.data.validation, "path") else config.data.validation)
    ).exists():
        print(f"{config.data.validation}: held-out data not found (needs ../shared/data)", file=sys.stderr)
        return 2
    run = args.run
    if run is None:
        run = str(train(config, quiet=True).run.path)
    name = (config.data.fill or {}).get("name", "")
    results = {
        "base (smollm2)": perplexity("smollm2", config, device),
        f"LoRA SFT ({run})": perplexity(run, config, device),
    }
    print(f"\n{'model':<40} {'perplexity':>10} {'identity answers':>17}   device {device_label}")
    for label, r in results.items():
        hits = sum(name.lower() in a.lower() for a in r["answers"].values())
        print(f"{label:<40} {r['perplexity']:>10.3f} {hits:>12}/{len(QUESTIONS)}")
    for label, r in results.items():
        print(f"\n{label}:")
        for q, a in r["answers"].items():
            print(f"  {q} -> {a[:120]!r}")
    base, tuned = (r["perplexity"] for r in results.values())
    print(json.dumps({k: {"perplexity": v["perplexity"], "tokens": v["tokens"]} for k, v in results.items()}))
    print(f"ratio: {tuned / base:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
