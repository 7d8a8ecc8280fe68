"""What adversarial training and R-Drop cost per training step, as a ratio to a plain step.

MiniLM's classifier, batches of 32 SST-2 training sentences, one forward and backward pass per
micro batch as the training loop runs it (no optimizer step, so every method sees the same weights);
the methods take turns round by round. Prints the median wall-clock and CPU (process time) milliseconds
per batch and their ratios to the plain step; on a machine other jobs share, the CPU time is the
steadier of the two.

    python bench/adversarial_cost.py [--rounds 5] [--threads 1]
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from lmforge.config import JobConfig, load_config
from lmforge.config.schema import AdversarialConfig
from lmforge.data.readers import Problems
from lmforge.models import load_model
from lmforge.models.family import FAMILIES
from lmforge.runtime import set_threads
from lmforge.tasks import get_task
from lmforge.training.adversarial import EmbeddingAdversary
from lmforge.training.distributed import make_accelerator
from lmforge.training.rdrop import RDropLoss

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "none": None,
    "fgm": {"method": "fgm", "epsilon": 0.1},
    "pgd (2 steps)": {"method": "pgd", "epsilon": 0.1, "steps": 2},
    "freelb (2 steps)": {"method": "freelb", "epsilon": 0.1, "steps": 2},
    "rdrop": "rdrop",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2, help="batches per method and round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    config = load_config(ROOT / "examples/sst2_adversarial.yaml", ["data.validation=null"])
    task = get_task("classification")
    data = task.load_data(config, Problems())
    loaded = load_model("minilm", task.head, data.labels.names, [])
    model, tokenizer = loaded.model.train(), loaded.tokenizer
    task.configure(config, data.train, data.labels)
    features = task.encode(tokenizer, data.train[:256], config.data.max_length)
    batches = [task.collate(features[i : i + 32], tokenizer) for i in range(0, 32 * args.batches, 32)]
    acc = make_accelerator(JobConfig.model_validate({"data": {"train": "unused"}, "device": "cpu"}), "no")
    embeddings = FAMILIES.get("transformer").input_embeddings(model)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in METHODS}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, setting in METHODS.items():
            adversary = (
                EmbeddingAdversary(AdversarialConfig(**setting), embeddings, task.loss, acc)
                if isinstance(setting, dict)
                else None
            )
            loss_of = RDropLoss(task, 1.0) if setting == "rdrop" else task.loss
            wall, cpu = time.perf_counter(), time.process_time()
            for batch in batches:
                _step(model, batch, loss_of, adversary, acc)
            n = len(batches)
            times[name].append(((time.perf_counter() - wall) / n, (time.process_time() - cpu) / n))
    medians = {name: [statistics.median(v[k] for v in values[1:]) for k in (0, 1)] for name, values in times.items()}
    base = medians["none"]
    print("| method | wall ms per batch of 32 | x plain | CPU ms per batch of 32 | x plain |")
    print("|---|---|---|---|---|")
    for name, (wall_ms, cpu_ms) in medians.items():
        print(
            f"| {name} | {1000 * wall_ms:.0f} | {wall_ms / base[0]:.2f} | {1000 * cpu_ms:.0f} | {cpu_ms / base[1]:.2f} |"
        )


def _step(model, batch, loss_of, adversary, acc) -> None:
    model.zero_grad(set_to_none=True)
    with adversary.watching() if adversary else torch.enable_grad():
        loss = loss_of(model, dict(batch))
        acc.backward(loss * (adversary.clean_weight if adversary else 1.0))
    if adversary is not None:
        adversary.backward(model, batch, 1.0)


if __name__ == "__main__":
    main()
