"""What a candidate costs at inference: latency at batch 1 (p50/p95), throughput at batch 32,
parameters and size on disk. Timings use the candidate's own predict path (what ``lmforge predict``
and the server run), after a warm-up, on texts from the evaluation data."""

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from lmforge.data.tagging import joiner_of
from lmforge.inference.predictor import RunPredictor
from lmforge.models.transformer import resolve_source
from lmforge.prompting.entities import ParseStats
from lmforge.prompting.ner_run import prepare_tagger
from lmforge.prompting.prompt_run import PromptClassifier, prepare

LATENCY_TEXTS = 30  # texts timed one by one
THROUGHPUT_TEXTS = 128  # texts timed in batches of 32
WARMUP = 3


def folder_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def time_predictions(predict: Callable[[list[str], int], object], texts: list[str], seed: int = 0) -> dict:
    """p50/p95 latency (ms) of single texts and texts/s in batches of 32."""
    if not texts:
        return {}
    rng = random.Random(seed)
    sample = [texts[i] for i in rng.sample(range(len(texts)), min(LATENCY_TEXTS, len(texts)))]
    for text in sample[:WARMUP]:
        predict([text], 1)
    latencies = []
    for text in sample:
        started = time.perf_counter()
        predict([text], 1)
        latencies.append(1000 * (time.perf_counter() - started))
    batch = [texts[i] for i in rng.sample(range(len(texts)), min(THROUGHPUT_TEXTS, len(texts)))]
    predict(batch[:32], 32)
    started = time.perf_counter()
    predict(batch, 32)
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "latency_p50_ms": round(statistics.median(latencies), 2),
        "latency_p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2),
        "throughput_per_s": round(len(batch) / seconds, 2),
        "timed_texts": len(sample),
    }


def parameters(model) -> int:
    if hasattr(model, "parameter_count"):  # one-pass models (n-gram): their learned values
        return model.parameter_count()
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def measure_run(run_dir: Path, texts: list[str], device: str = "auto") -> dict:
    """A trained run's inference cost on ``device``, through ``RunPredictor``."""

    predictor = RunPredictor(run_dir, device=device)
    if predictor.record.task == "token_classification":
        predict = lambda batch, size: predictor.predict_entities(texts=batch, batch_size=size)  # noqa: E731
    else:
        predict = lambda batch, size: predictor.predict(batch, batch_size=size)  # noqa: E731
    result = time_predictions(predict, texts)
    result["size_bytes"] = folder_size(predictor.folder)
    result["parameters_total"] = parameters(predictor.model)
    return result


def measure_prompt(config, texts: list[str]) -> dict:
    """A prompt candidate's inference cost: its template, examples and model, as ``lmforge prompt``
    scores them (no calibration: that is a fixed cost per example set)."""

    if config.task == "token_classification":
        return _measure_prompt_tagger(config, texts)
    data, _, template, verbalizers, _ = prepare(config)
    classifier = PromptClassifier(config.prompt, data.train, template, verbalizers, device=config.device)
    result = time_predictions(lambda batch, size: classifier.probabilities(batch, batch_size=size), texts)
    model = classifier.scorer.gen.model if classifier.scorer is not None else classifier.encoder.model
    result["parameters_total"] = parameters(model)
    folder = (
        classifier.scorer.gen.folder if classifier.scorer is not None else resolve_source(classifier.encoder_name)[0]
    )
    result["size_bytes"] = folder_size(folder)
    return result


def _measure_prompt_tagger(config, texts: list[str]) -> dict:
    """A prompting NER candidate: its replies generated and parsed onto the tokens, as ``lmforge
    prompt`` does (texts are the sentences' tokens joined, split back on the joiner)."""

    tagger = prepare_tagger(config)[0]

    def tag(batch, size):
        tagger.spec.batch_size = size
        return tagger.tag([list(t) if joiner_of(list(t)) == "" else t.split(" ") for t in batch], ParseStats())

    result = time_predictions(tag, texts)
    result["parameters_total"] = parameters(tagger.gen.model)
    result["size_bytes"] = folder_size(tagger.gen.folder)
    return result
