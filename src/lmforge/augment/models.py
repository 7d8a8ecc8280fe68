"""Model-based augmentation steps: ``contextual`` (a masked LM fills masked words; Kobayashi 2018,
"Contextual Augmentation") and ``paraphrase`` (a generative model rewrites the text, as
back-translation does with a translation model). Each returns, for a list of examples, a changed
copy of each; they are computed once per copy, not once an epoch.

Paraphrases are kept in ``RUN/augment/paraphrase.jsonl`` (one line per text and copy, keyed by the
model, the copy and the text), so a resumed or repeated run reads them instead of generating again.
"""

import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
import transformers

from lmforge.augment.pipeline import Augmenter
from lmforge.augment.units import language_of, text_units, units_text
from lmforge.config.schema import AugmentStep, JobConfig
from lmforge.data.tagging import normalize_scheme
from lmforge.data.task_data import TaskData
from lmforge.errors import ConfigError, ModelError
from lmforge.inference.generator import open_generator
from lmforge.models.decoding import GenerationOptions
from lmforge.models.safe_loading import check_model_folder
from lmforge.runtime import resolve_device
from lmforge.tracking.run_folder import RunFolder

log = logging.getLogger("lmforge")

ModelStep = Callable[[list, int, random.Random], list]
TOP_K = 10  # the masked LM's candidates a filled word is drawn from
PARAPHRASE_PROMPT = {
    "en": "Rewrite this sentence in different words, keeping its meaning. Answer with the sentence only.\n\n{text}",
    "zh": "请换一种说法改写下面这句话，保持意思不变，只回答改写后的句子。\n\n{text}",
}


def augmenter_for(config: JobConfig, data: TaskData, model, tokenizer, cache_dir: Path) -> Augmenter | None:
    """``config.data.augment``'s augmenter over ``data.train``, or None. ``model``: the job's (its
    input embeddings serve ``source: embedding`` when it is a pretrained transformer)."""
    steps = config.data.augment
    if not steps:
        return None
    embeddings = None
    if isinstance(model, transformers.PreTrainedModel):
        weight: torch.Tensor = cast(Any, model).get_input_embeddings().weight
        embeddings = (weight.detach(), tokenizer)
    return Augmenter(
        steps,
        config.task,
        data.train,
        config.train.seed,
        normalize_scheme(config.data.output_scheme),
        {name: i for i, name in enumerate(data.labels.names)} if config.task == "token_classification" else None,
        embeddings,
        model_based_steps(steps, cache_dir, config.device),
    )


def model_based_steps(steps: list[AugmentStep], cache_dir: Path, device: str) -> dict[int, ModelStep]:
    out: dict[int, ModelStep] = {}
    for i, step in enumerate(steps):
        if step.method == "contextual":
            out[i] = ContextualFill(step, device)
        elif step.method == "paraphrase":
            out[i] = Paraphraser(step, cache_dir, device)
    return out


def masked_lm_folder(source: str) -> Path:
    """A masked LM's folder: an lmforge masked_lm run (its best model) or a model folder."""
    path = Path(source).expanduser()
    if (path / "lmforge.json").is_file():
        run = RunFolder(path)
        task = run.read_record().task
        if task != "masked_lm":
            raise ConfigError(f"data.augment model {source}: a {task} run; contextual needs a masked_lm run")
        return run.model_dir("auto")
    check_model_folder(path, source)
    return path


class ContextualFill:
    """Mask about ``p`` of the words (at least one) and draw each replacement from the masked LM's
    ``TOP_K`` predictions for it (whole words only, never the word itself)."""

    def __init__(self, step: AugmentStep, device: str):
        assert step.model is not None, "check_steps requires data.augment model for contextual"
        folder = masked_lm_folder(step.model)
        try:
            self.model = transformers.AutoModelForMaskedLM.from_pretrained(folder, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"data.augment model {step.model}: no masked-LM head ({str(exc).splitlines()[0]})"
            ) from None
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.mask_token is None:
            raise ModelError(f"data.augment model {step.model}: its tokenizer has no mask token")
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.step = step

    def __call__(self, examples: list, copy: int, rng: random.Random) -> list:
        language = self.step.language if self.step.language != "auto" else language_of([ex.text for ex in examples])
        return [self._fill(ex, language, rng) for ex in examples]

    @torch.inference_mode()
    def _fill(self, example, language: str, rng: random.Random):
        head, units = text_units(example.text, language)
        words = [i for i, u in enumerate(units) if any(ch.isalnum() for ch in u.word)]
        if not words:
            return example
        chosen = sorted(rng.sample(words, max(1, min(len(words), round(self.step.p * len(units))))))
        masked = [replace(u, word=self.tokenizer.mask_token) if i in chosen else u for i, u in enumerate(units)]
        batch = self.tokenizer(units_text(head, masked), return_tensors="pt", truncation=True, max_length=256)
        logits = self.model(**batch.to(self.device)).logits[0]  # (T, V)
        places = (batch["input_ids"][0] == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
        for i, place in zip(chosen, places):
            top = logits[place].float().softmax(-1).topk(TOP_K * 3)
            pieces = self.tokenizer.convert_ids_to_tokens(top.indices.tolist())
            options = [
                (piece, prob)
                for piece, prob in zip(pieces, top.values.tolist())
                if piece.isalnum() and piece.lower() != units[i].word.lower()
            ][:TOP_K]
            if options:
                word = rng.choices([w for w, _ in options], weights=[p for _, p in options])[0]
                units[i] = replace(units[i], word=word)
        return replace(example, text=units_text(head, units), where=f"{example.where} (contextual)")


class Paraphraser:
    """Sampled rewrites by a generative model (default: the bundled smollm2), cached on disk."""

    def __init__(self, step: AugmentStep, cache_dir: Path, device: str):
        self.step, self.source = step, step.model or "smollm2"
        self.generator = open_generator(self.source, device=device, engine="auto")
        self.cache_file = cache_dir / "paraphrase.jsonl"
        self.cache: dict[str, str] = {}
        if self.cache_file.is_file():
            for line in self.cache_file.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.cache[row["key"]] = row["text"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: generated again

    def _key(self, text: str, copy: int) -> str:
        return hashlib.sha256(f"{self.source}\0{copy}\0{text}".encode()).hexdigest()[:32]

    def __call__(self, examples: list, copy: int, rng: random.Random) -> list:
        language = self.step.language if self.step.language != "auto" else language_of([ex.text for ex in examples])
        out, new = [], 0
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cache_file, "a", encoding="utf-8") as fh:
            for ex in examples:
                key = self._key(ex.text, copy)
                if key not in self.cache:
                    self.cache[key] = self._rewrite(ex.text, language, rng.randrange(2**31))
                    fh.write(json.dumps({"key": key, "text": self.cache[key]}, ensure_ascii=False) + "\n")
                    fh.flush()
                    new += 1
                out.append(replace(ex, text=self.cache[key], where=f"{ex.where} (paraphrase {copy + 1})"))
        log.info("data.augment paraphrase: %d generated, %d from %s", new, len(examples) - new, self.cache_file)
        return out

    def _rewrite(self, text: str, language: str, seed: int) -> str:
        options = GenerationOptions(
            max_new_tokens=min(256, 16 + 2 * len(text.split()) + (len(text) if language == "zh" else 0)),
            temperature=0.8,
            top_p=0.95,
            seed=seed,
            stop=["\n"],
        )
        reply = self.generator.generate(PARAPHRASE_PROMPT[language].format(text=text), options).text.strip()
        return reply.strip('"“”') or text  # an empty answer keeps the text
