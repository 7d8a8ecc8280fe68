"""``lmforge prompt``: classify a config's evaluation data with no training, into a run folder.

setup (data as ``train`` would read it, the template, the examples) -> score (label likelihoods
with a causal LM, or similarity with an encoder) -> metrics with and without contextual calibration
-> ``eval_results.json``, ``predictions.jsonl``, ``lmforge.json``, ``report.html``.
"""

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import torch

from lmforge.config import load_config
from lmforge.config.loader import config_to_dict
from lmforge.config.schema import JobConfig
from lmforge.data.readers import Problems
from lmforge.errors import ConfigError
from lmforge.evaluation.classification import classification_metrics
from lmforge.inference.generator import open_transformer
from lmforge.inference.llama_cpp import LlamaCppGenerator
from lmforge.models.embedding import SentenceEncoder
from lmforge.prompting.generation import generate_splits
from lmforge.prompting.ner_run import tag_splits
from lmforge.prompting.scoring import calibrate, label_probabilities, score_labels
from lmforge.prompting.selection import fixed_examples, nearest_examples
from lmforge.prompting.splits import evaluation_splits, labelled_pool
from lmforge.prompting.templates import PromptTemplate, detect_language
from lmforge.runtime import quiet_libraries, set_seed, set_threads
from lmforge.tasks import get_task
from lmforge.tasks.classification import prediction_rows
from lmforge.tracking.report import write_report
from lmforge.tracking.run_folder import RunFolder, write_atomic
from lmforge.tracking.run_record import TASK_HEADS, ModelRecord, RunRecord

log = logging.getLogger("lmforge")
CONTENT_FREE = ("N/A", "", "[MASK]")


@dataclass
class PromptOutcome:
    run_dir: str
    results: dict


def verbalizers_of(config: JobConfig, names: list[str]) -> list[str]:
    given = config.prompt.verbalizers
    if given is None:
        return list(names)
    if isinstance(given, list):
        if len(given) != len(names):
            raise ConfigError(f"prompt.verbalizers: {len(given)} given for {len(names)} labels ({', '.join(names)})")
        return [str(v) for v in given]
    unknown = set(given) - set(names) - {str(i) for i in range(len(names))}
    if unknown:
        raise ConfigError(
            f"prompt.verbalizers: unknown label(s) {', '.join(sorted(unknown))} (labels: {', '.join(names)})"
        )
    out = []
    for i, name in enumerate(names):
        value = given.get(name, given.get(str(i)))
        if value is None:
            raise ConfigError(f"prompt.verbalizers: no answer for label '{name}' (give it by name or id {i})")
        out.append(str(value))
    return out


class LikelihoodClassifier:
    """A causal LM scoring each label's verbalizer after the prompt."""

    def __init__(self, source: str, device: str = "auto", engine: str = "torch"):

        self.gen = open_transformer(source, device, engine)
        self.chat = self.gen.has_template
        tok = self.gen.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else (self.gen.stop_ids or [0])[0]

    def prompt_ids(self, template: PromptTemplate, text: str, examples) -> list[int]:
        if self.chat:
            return self.gen.encode(template.messages(text, examples))
        return self.gen.tokenizer(template.document(text, examples))["input_ids"]

    def answer_ids(self, template: PromptTemplate) -> list[list[int]]:
        ids = [self.gen.tokenizer(a, add_special_tokens=False)["input_ids"] for a in template.answers(self.chat)]
        if any(not i for i in ids):
            raise ConfigError("prompt.verbalizers: an answer has no tokens")
        return ids

    def probabilities(self, prompts: list[list[int]], answers, normalize: str, batch_size: int) -> torch.Tensor:
        if isinstance(self.gen, LlamaCppGenerator):
            scores = torch.tensor([self.gen.score_continuations(ids, answers) for ids in prompts])
            lengths = torch.tensor([len(a) for a in answers])
        else:
            scores, lengths = score_labels(self.gen.model, prompts, answers, self.pad, batch_size)
        return label_probabilities(scores, lengths, normalize)


def prepare(config: JobConfig):
    """Read the config's data and build its template: (data, evaluation splits, template,
    verbalizers, language)."""

    quiet_libraries()
    set_threads(config.train.threads)  # once, for the whole job (the model and any encoder)
    if config.task != "classification":
        raise ConfigError(f"task: lmforge prompt classifies; '{config.task}' is not supported by it yet")
    spec = config.prompt
    task = get_task("classification")
    data = task.load_data(config, Problems(skip=config.data.on_error == "skip"))
    labelled_pool(config, data)
    for note in data.notes:
        log.info(note)
    splits = evaluation_splits(data, spec)
    set_seed(spec.seed)
    verbalizers = verbalizers_of(config, data.labels.names)
    language = spec.language if spec.language != "auto" else detect_language([ex.text for ex in data.train])
    template = PromptTemplate(verbalizers, language, spec.instruction, spec.text_format, spec.max_chars)
    return data, splits, template, verbalizers, language


def classify(config: JobConfig):
    """Classify the config's evaluation splits: (results per split, details of the prompt, the
    data, language, verbalizers, seconds)."""
    data, splits, template, verbalizers, language = prepare(config)
    started = time.perf_counter()
    classifier = PromptClassifier(config.prompt, data.train, template, verbalizers, device=config.device)
    results = classifier.classify_splits(splits, data.labels.names)
    return results, classifier.details(), data, language, verbalizers, time.perf_counter() - started


def _classification(config: JobConfig):
    results, details, data, language, verbalizers, seconds = classify(config)
    evaluated = sum(len(rows) for _, _, rows in results.values())
    return (
        results,
        details,
        data,
        {
            "method": f"prompt/{config.prompt.method}",
            "verbalizers": verbalizers,
            "language": language,
            "examples_per_s": round(evaluated / seconds, 3),
            "seconds": round(seconds, 1),
        },
    )


def _token_classification(config: JobConfig):
    if config.prompt.method != "likelihood":
        raise ConfigError(
            "prompt.method: token_classification is prompted by generation (likelihood); "
            f"'{config.prompt.method}' classifies whole texts"
        )
    results, details, data, language = tag_splits(config)
    evaluated = sum(len(rows) for _, _, rows in results.values())
    return (
        results,
        details,
        data,
        {
            "method": "prompt/generation",
            "language": language,
            "examples_per_s": round(evaluated / max(details["seconds"], 1e-9), 3),
            "seconds": details["seconds"],
        },
    )


def _generation(config: JobConfig):
    results, details, data, language = generate_splits(config)
    evaluated = sum(len(rows) for _, _, rows in results.values())
    return (
        results,
        details,
        data,
        {
            "method": "prompt/generation",
            "language": language,
            "examples_per_s": round(evaluated / max(details["seconds"], 1e-9), 3),
            "seconds": details["seconds"],
        },
    )


# task -> how its evaluation splits are prompted: (results per split, details, data, meta)
PROMPT_TASKS = {
    "classification": _classification,
    "token_classification": _token_classification,
    "seq2seq": _generation,
    "causal_lm": _generation,
}


def _prompted(config: JobConfig):
    runner = PROMPT_TASKS.get(config.task)
    if runner is None:
        raise ConfigError(
            f"task: lmforge prompt handles {', '.join(PROMPT_TASKS)}; '{config.task}' has no answers to prompt for"
        )
    return runner(config)


def headline(metrics: dict, task: str) -> str:
    """The one-line summary of a split's metrics, as the ``task`` (the config's) words it."""
    return get_task(task).headline(metrics)


def run_prompt(config: JobConfig, quiet: bool = False) -> PromptOutcome:

    run = RunFolder(config.output)
    resolved = config_to_dict(config)
    run.check_writable(resolved, False, config.overwrite)
    results, details, data, meta = _prompted(config)
    if config.overwrite and run.path.exists():
        run.set_aside()  # the run before goes once this one is written; files lmforge did not write stay
    run.write_config(resolved)
    eval_results, predictions = {}, []
    for split, (metrics, calibrated, rows) in results.items():
        eval_results[split] = metrics
        if calibrated is not None:
            eval_results[f"{split}_calibrated"] = calibrated
        predictions += rows
    write_atomic(run.path / "eval_results.json", json.dumps(eval_results, indent=1, ensure_ascii=False))
    write_atomic(run.path / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in predictions))
    spec = config.prompt
    record = RunRecord(
        task=config.task,
        head=TASK_HEADS[config.task],
        labels=data.labels.to_json(),
        model=ModelRecord(family="prompt", source=spec.model),
        max_length=config.data.max_length,
        prompt=details,
        finished=True,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **meta,  # how it prompted: method, language, verbalizers, speed (kept untyped)
    )
    run.write_record(record)
    write_report(run.path)
    run.drop_previous()
    if not quiet:
        for split, metrics in eval_results.items():
            log.info("%s: %s", split, headline(metrics, config.task))
    return PromptOutcome(str(run.path), eval_results)


def evaluate_run(
    run_dir: str,
    path: str,
    limit: int | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    device: str = "auto",
) -> dict:
    """``lmforge eval`` on a prompt run: the run's own prompt settings on another labelled file, on
    ``device`` (not the run's). The metrics of the uncalibrated prediction, with the calibrated ones
    under ``calibrated``."""
    from pathlib import Path

    config_file = Path(run_dir) / "config.yaml"
    fields = {k: v for k, v in (("text", text_field), ("label", label_field)) if v}
    source = json.dumps({"path": str(path), "fields": fields} if fields else str(path))
    overrides = [f"data.validation={source}", "data.split=null", "data.test=null", f"prompt.limit={limit or 'null'}"]
    overrides.append(f"device={device}")
    config = load_config(str(config_file), overrides)
    results, *_ = _prompted(config)
    metrics, calibrated, _ = results["validation"]
    if calibrated is not None:
        metrics["calibrated"] = {k: calibrated[k] for k in ("accuracy", "macro_f1", "micro_f1", "weighted_f1")}
    return metrics


def _metrics(gold: list[int], probs: torch.Tensor, names: list[str]) -> dict:
    metrics = classification_metrics(gold, probs.argmax(-1).tolist(), names)
    metrics["count"] = len(gold)
    return metrics


def _rows(split, examples, probs, calibrated, names) -> list[dict]:
    rows = prediction_rows(probs, names, 3)
    for i, (row, ex) in enumerate(zip(rows, examples)):
        row.update({"split": split, "text": ex.text, "gold": names[ex.label_id], "where": ex.where})
        if calibrated is not None:
            row["label_calibrated"] = names[int(calibrated[i].argmax())]
    return rows


class PromptClassifier:
    """A prompt config made ready to classify raw texts: the causal LM with its template, answers
    and in-context examples (``likelihood``), or the encoder with its label vectors
    (``similarity``). Used by ``lmforge prompt`` and by ``compare``'s latency measurement."""

    def __init__(self, spec, train: list, template: PromptTemplate, verbalizers: list[str], *, device: str = "auto"):

        self.spec, self.train, self.template = spec, train, template
        self.encoder = self.scorer = None
        if spec.method == "similarity":
            self.encoder_name = spec.model if spec.model != "smollm2" else "minilm"
            self.encoder = SentenceEncoder(self.encoder_name, device=device)
            self.label_vectors = self.encoder.encode(verbalizers)  # (L, C)
            return
        self.scorer = LikelihoodClassifier(spec.model, device, spec.engine)
        self.answers = self.scorer.answer_ids(template)
        self.fixed = (
            fixed_examples([ex.label_id for ex in train], spec.shots, spec.selection, spec.seed)
            if spec.selection != "nearest"
            else []
        )
        if spec.shots and spec.selection == "nearest":
            self.encoder = SentenceEncoder("minilm", device=device)
            self.train_vectors = self.encoder.encode([ex.text for ex in train])

    def details(self) -> dict:
        if self.scorer is None:
            return {"descriptions": self.template.verbalizers, "encoder": self.encoder_name}
        spec = self.spec
        return {
            "shots": spec.shots,
            "selection": spec.selection,
            "seed": spec.seed,
            "chat_template": self.scorer.chat,
            "normalize": spec.normalize,
            "examples": [self.train[i].where for i in self.fixed],
        }

    def examples_for(self, texts: list[str]) -> list[list[int]]:
        """Indices of the training examples shown with each text."""
        if self.encoder is not None and self.scorer is not None:
            return nearest_examples(self.encoder.encode(texts), self.train_vectors, self.spec.shots)
        return [self.fixed] * len(texts)

    def _shown(self, idx) -> list[tuple[str, int]]:
        return [(self.train[i].text, self.train[i].label_id) for i in idx]

    def probabilities(
        self, texts: list[str], per_text: list[list[int]] | None = None, batch_size: int | None = None
    ) -> torch.Tensor:
        """(N, L) label probabilities of ``texts``."""
        if self.scorer is None:
            similarity = self.encoder.encode(texts) @ self.label_vectors.T  # (N, L) cosines
            return (similarity / 0.05).softmax(-1)  # a temperature, for scores
        per_text = per_text if per_text is not None else self.examples_for(texts)
        prompts = [self.scorer.prompt_ids(self.template, text, self._shown(idx)) for text, idx in zip(texts, per_text)]
        return self.scorer.probabilities(prompts, self.answers, self.spec.normalize, batch_size or self.spec.batch_size)

    def calibrated(self, probs: torch.Tensor, per_text: list[list[int]]) -> torch.Tensor:
        """Contextual calibration: each row divided by the label prior of content-free inputs shown
        with the same examples."""
        priors = {}
        for idx in {tuple(i) for i in per_text}:
            free = [self.scorer.prompt_ids(self.template, text, self._shown(list(idx))) for text in CONTENT_FREE]
            priors[idx] = self.scorer.probabilities(free, self.answers, self.spec.normalize, self.spec.batch_size).mean(
                0
            )
        return calibrate(probs, torch.stack([priors[tuple(idx)] for idx in per_text]))

    def classify_splits(self, splits: dict, names: list[str]) -> dict:
        """(metrics, calibrated metrics or None, prediction rows) per split."""
        results = {}
        for split, examples in splits.items():
            texts = [ex.text for ex in examples]
            per_text = self.examples_for(texts) if self.scorer is not None else None
            probs = self.probabilities(texts, per_text)
            calibrated = None
            if self.scorer is not None and self.spec.calibrate:
                calibrated = self.calibrated(probs, per_text)
            gold = [ex.label_id for ex in examples]
            results[split] = (
                _metrics(gold, probs, names),
                _metrics(gold, calibrated, names) if calibrated is not None else None,
                _rows(split, examples, probs, calibrated, names),
            )
        return results
