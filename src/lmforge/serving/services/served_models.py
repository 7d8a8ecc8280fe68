"""The served models: one class per kind (classifier, tagger, encoder, text generator), each loading
its weights and starting the worker that batches its requests.

``open_models`` checks every source at once (so a wrong path fails before the server starts);
``load`` does the slow part, at start-up.
"""

import hashlib
import time
from pathlib import Path

import peft
import torch
import transformers

from lmforge.errors import ConfigError, LmforgeError, ModelError
from lmforge.inference.ensemble import EnsemblePredictor
from lmforge.inference.generator import open_transformer
from lmforge.inference.llama_cpp import LlamaCppGenerator
from lmforge.inference.predictor import RunPredictor
from lmforge.runtime import resolve_device
from lmforge.serving import precision, protocol
from lmforge.serving.batching import Batcher
from lmforge.serving.engine import GenerationEngine, LlamaCppEngine
from lmforge.serving.services.embedder import Embedder
from lmforge.serving.services.inputs import token_counts
from lmforge.serving.services.sources import ensemble_members, probe, split_source
from lmforge.serving.services.token_text import TokenText
from lmforge.serving.settings import ServeSettings
from lmforge.serving.structured import Grammars
from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_record import RunRecord

ROUTES = {
    "classification": ["/v1/classify", "/v1/embeddings"],
    "token_classification": ["/v1/ner", "/v1/embeddings"],
    "embeddings": ["/v1/embeddings"],
    "generation": ["/v1/completions", "/v1/chat/completions"],
}


class ServedModel:
    """A model under a name, with the routes it serves; ``load`` fills in what the routes use."""

    kind = ""

    def __init__(self, name: str, source: str, settings: ServeSettings, record: RunRecord | None, folder: Path | None):
        self.name, self.source, self.settings, self.record, self.folder = name, source, settings, record, folder
        self.created = int(time.time())
        self.routes = list(ROUTES[self.kind])
        self.dtype = "float32"
        self.combine: str | None = None  # an ensemble's way of combining its members
        self.batcher: Batcher | None = None
        self.embedder: Embedder | None = None

    def load(self, metrics) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for batcher in (self.batcher, self.embedder and self.embedder.batcher):
            if batcher is not None:
                batcher.close()

    def entity_bias(self) -> float | None:
        """The bias a tagger decodes with (None for other kinds)."""
        return None

    def card(self) -> protocol.ModelCard:
        return protocol.ModelCard(
            id=self.name,
            created=self.created,
            task=self.kind,
            routes=self.routes,
            dtype=self.dtype,
            entity_bias=self.entity_bias(),
            combine=self.combine,
        )

    def batcher_for(self, fn, metrics, suffix: str = "") -> Batcher:
        return Batcher(
            fn,
            self.settings.max_batch,
            self.settings.batch_wait_ms / 1000,
            self.settings.max_queue,
            name=f"{self.name}{suffix}",
            on_batch=lambda n: metrics.batch(self.name, n),
            on_queue=lambda n: metrics.queue(self.name + suffix, n),
        )


class RunModel(ServedModel):
    """A classification or token-classification run (or an ensemble of them), through the same
    predictor as ``lmforge predict``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.predictor: RunPredictor | EnsemblePredictor | None = None
        self.tokenizers: list = []

    def load(self, metrics) -> None:
        members = ensemble_members(self.source)
        if len(members) > 1:
            self._load_ensemble(members, metrics)
            return
        # serve settles its own dtype (--dtype, measured against float32 on probes): no autocast here
        self.predictor = RunPredictor(self.source, self.settings.checkpoint, self.settings.device, "fp32")
        self.tokenizers = [self.predictor.tokenizer]
        self._decoding()
        self.limit = self.settings.max_input_tokens or self.predictor.max_length
        # NER reads a long text in overlapping windows, so its limit is a multiple of the window.
        self.ner_limit = self.settings.max_input_tokens or 16 * self.predictor.max_length
        family = self.predictor.record.family
        if self.kind == "classification" and family == "transformer" and self.predictor.backend == "torch":
            probes = precision.probe_texts(Path(self.source))
            self.dtype = precision.settle(
                self.settings.dtype, self.predictor.model, lambda: self.run(probes), precision.same_classes, self.name
            )
        self.batcher = self.batcher_for(self.run, metrics)
        if family == "transformer":
            p = self.predictor
            self.embedder = Embedder(p.model, p.tokenizer, p.max_length, p.device, self, metrics)
        else:
            self.routes.remove("/v1/embeddings")

    def _load_ensemble(self, members: list[str], metrics) -> None:
        """Several runs as one model: the mean of their probabilities, decoded as ``lmforge predict
        --ensemble`` does. Inputs are limited by the shortest member; no embeddings route (whose
        encoder's vectors would it be?), and float32 throughout."""
        predictors = [RunPredictor(m, self.settings.checkpoint, self.settings.device, "fp32") for m in members]
        self.predictor = EnsemblePredictor(predictors, self.settings.combine)
        self.combine = self.predictor.combine
        self.tokenizers = [m.tokenizer for m in predictors]
        self._decoding()
        shortest = min(m.max_length for m in predictors)
        self.limit = self.settings.max_input_tokens or shortest
        self.ner_limit = self.settings.max_input_tokens or 16 * shortest
        self.batcher = self.batcher_for(self.run, metrics)
        self.routes.remove("/v1/embeddings")

    def _decoding(self) -> None:
        pass

    def run(self, texts: list[str]) -> list[dict]:
        """The model on one batch (on the compute thread)."""
        raise NotImplementedError

    def counts(self, texts: list[str]) -> list[int]:
        """Tokens per text: the most any member's tokenizer makes of it."""
        return [max(row) for row in zip(*(self._counts(tokenizer, texts) for tokenizer in self.tokenizers))]

    @staticmethod
    def _counts(tokenizer, texts: list[str]) -> list[int]:
        try:
            return token_counts(tokenizer, texts)
        except TypeError:  # a vocabulary that is not a Hugging Face tokenizer
            return [len(t) for t in texts]


class Classifier(RunModel):
    kind = "classification"

    def run(self, texts: list[str]) -> list[dict]:
        return self.predictor.predict(texts, batch_size=self.settings.max_batch, top_k=len(self.predictor.labels.names))


class Tagger(RunModel):
    kind = "token_classification"

    def run(self, texts: list[str]) -> list[dict]:
        return self.predictor.predict_entities(texts=texts, batch_size=self.settings.max_batch)

    def _decoding(self) -> None:
        if self.settings.entity_bias:
            self.predictor.task.entity_bias = self.settings.entity_bias

    def entity_bias(self) -> float | None:
        if self.predictor is None:  # not loaded yet
            return self.settings.entity_bias
        return float(self.predictor.task.entity_bias)


class EncoderModel(ServedModel):
    """An encoder folder or alias (``minilm``) or a masked-LM run: embeddings only."""

    kind = "embeddings"

    def load(self, metrics) -> None:
        self.device = resolve_device(self.settings.device)
        model = transformers.AutoModel.from_pretrained(
            self.folder, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
        )
        model = model.to(self.device).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.folder, trust_remote_code=False)
        length = (
            self.record.max_length if self.record else min(getattr(model.config, "max_position_embeddings", 512), 512)
        )
        self.limit = self.settings.max_input_tokens or length
        self.embedder = Embedder(model, tokenizer, length, self.device, self, metrics)
        probes = precision.probe_texts(Path(self.source) if self.record else None)
        self.dtype = precision.settle(
            self.settings.dtype, model, lambda: self.embedder.embed(probes), precision.same_embeddings, self.name
        )


class TextGenerator(ServedModel):
    """A causal or seq2seq LM: completions and chat, batched by the generation engine."""

    kind = "generation"
    vocab: int  # token ids 0 .. vocab - 1 (prompts as ids, logit_bias)
    names: TokenText  # tokens as the API shows them (logprobs)
    grammars: Grammars | None  # structured output (None: encoder-decoders)
    context: int | None = None  # prompt + reply tokens (the prompt alone when output_context is set)
    output_context: int | None = None  # encoder-decoders: the longest reply

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.engine: GenerationEngine | None = None
        self.torch_only = False  # LoRA adapters are served on it (peft, on PyTorch)

    def load(self, metrics) -> None:
        # threads: set once at start-up
        engine = "torch" if self.torch_only else self.settings.engine
        adapters = self.torch_only or bool(self.settings.admin_key)  # LoRA layers need float weights
        self.generator = open_transformer(
            self.source,
            self.settings.device,
            engine,
            checkpoint=self.settings.checkpoint,
            dtype=self.settings.dtype,
            peft=adapters,
        )
        self.context = self.generator.context
        self.output_context = self.generator.output_context  # seq2seq: the decoder's own limit
        self.vocab = self.generator.vocab
        self.names = TokenText(self.generator.tokenizer)
        self.grammars = (
            None if self.generator.seq2seq else Grammars(self.generator.tokenizer, self.vocab, self.generator.stop_ids)
        )
        self.dtype = self.generator.weights
        engine_type = LlamaCppEngine if isinstance(self.generator, LlamaCppGenerator) else GenerationEngine
        self.engine = engine_type(
            self.generator,
            self.settings.max_generation_batch,
            self.settings.max_queue,
            wait_s=self.settings.batch_wait_ms / 1000,
            on_batch=lambda n: metrics.batch(self.name, n),
            on_queue=lambda n: metrics.queue(self.name, n),
            name=self.name,
        )

    def close(self) -> None:
        super().close()
        if self.engine is not None:
            self.engine.close()

    def remove_adapter(self, name: str) -> None:
        """Unload an adapter no row uses any more (on the compute thread); with the last one gone
        the base model is itself again (peft's layers removed, nothing merged)."""
        model = self.generator.model
        model.delete_adapter(name)
        if not model.peft_config:
            self.generator.model = model.unload()
            assert self.engine is not None, "load() starts the engine"
            self.engine.model = self.generator.model
        elif model.active_adapter not in model.peft_config:
            model.set_adapter(next(iter(model.peft_config)))

    def add_adapter(self, name: str, folder: Path) -> None:
        """Load a LoRA adapter beside the others on this model's weights (on the compute thread, so
        between two decoding steps); requests name it through their ``model``."""
        model = self.generator.model
        if isinstance(model, peft.PeftModel):
            model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        else:
            self.generator.model = peft.PeftModel.from_pretrained(
                model, str(folder), adapter_name=name, is_trainable=False
            )
            self.generator.model.eval()
            assert self.engine is not None, "load() starts the engine"
            self.engine.model = self.generator.model


class AdapterModel(ServedModel):
    """A LoRA run served on its base model's ``TextGenerator``: the same engine and weights, its own
    adapter matrices; its rows decode in the same batches as the base's and other adapters'."""

    kind = "generation"

    def __init__(self, name: str, run: Path, base: TextGenerator, settings: ServeSettings, record: RunRecord):
        super().__init__(name, str(run), settings, record, RunFolder(run).model_dir(settings.checkpoint))
        self.base = base
        # peft keeps adapters in module dicts, which refuse a "." and collide with attributes
        # ("float"): its name for this one is an identifier derived from the public name.
        self.peft_name = "lmforge_adapter_" + hashlib.sha256(name.encode()).hexdigest()[:16]

    def load(self, metrics) -> None:
        self.base.add_adapter(self.peft_name, self.folder / "adapter")
        for attribute in ("generator", "engine", "context", "output_context", "vocab", "names", "grammars"):
            setattr(self, attribute, getattr(self.base, attribute))
        self.dtype = self.base.dtype

    def card(self) -> protocol.ModelCard:
        return super().card().model_copy(update={"base": self.base.name})


KINDS: dict[str, type[ServedModel]] = {cls.kind: cls for cls in (Classifier, Tagger, EncoderModel, TextGenerator)}


def open_models(settings: ServeSettings) -> dict[str, ServedModel]:
    """Name -> served model for every source, checked but not loaded."""
    models: dict[str, ServedModel] = {}
    for text in settings.sources:
        name, source = split_source(text)
        if name in models:
            raise ModelError(f"serve: two models are named '{name}'; name them: NAME=PATH")
        try:
            found = probe(source, settings.checkpoint)
        except LmforgeError:
            raise
        except (OSError, ValueError) as exc:
            raise ModelError(f"{source}: cannot serve it ({exc})") from None
        models[name] = KINDS[found.kind](name, source, settings, found.record, found.folder)
    for text in settings.adapters:
        name, source = split_source(text)
        models[name] = open_adapter(name, source, models, settings)
    if settings.entity_bias:
        _check_entity_bias(models)
    if settings.combine != "mean" and not any(len(ensemble_members(m.source)) > 1 for m in models.values()):
        raise ConfigError(
            f"serve: --combine {settings.combine} combines the members of an ensemble "
            f"(NAME=RUN1+RUN2); none of {', '.join(models)} is one"
        )
    return models


def open_adapter(name: str, source: str, models: dict[str, ServedModel], settings: ServeSettings) -> AdapterModel:
    """An adapter to serve as ``name`` (checked, not loaded), for start-up or the admin route."""
    if name in models:
        raise ConfigError(f"serve: two models are named '{name}'; name them: NAME=RUN")
    run, record, base = _adapter_base(source, models, settings)
    return AdapterModel(name, run, base, settings, record)


def _adapter_base(source: str, models: dict[str, ServedModel], settings: ServeSettings):
    """(run folder, record, the served model it adapts) for a LoRA run; a ``ConfigError`` naming
    what is wrong otherwise."""
    run = Path(source).expanduser()
    if not (run / "lmforge.json").is_file():
        raise ConfigError(f"serve --adapters {source}: not a run folder")
    record = RunFolder(run).read_record()
    adapter = RunFolder(run).model_dir(settings.checkpoint) / "adapter"
    if record.tuning not in ("lora", "adalora") or not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"serve --adapters {source}: a {record.tuning or 'full'}-tuned run; adapters are LoRA runs")
    if record.task != "causal_lm":
        raise ConfigError(f"serve --adapters {source}: a {record.task} run; adapters are causal_lm runs")
    for model in models.values():
        if isinstance(model, TextGenerator) and _same_model(record, model):
            if settings.engine == "llama_cpp":
                raise ConfigError(f"serve --adapters {source}: adapters run on PyTorch (--engine auto or torch)")
            model.torch_only = True  # peft's adapters, on the base's PyTorch weights
            return run, record, model
    raise ConfigError(f"serve --adapters {source}: its base model ({record.model.source}) is not served; serve it too")


def _same_model(record: RunRecord, model: "TextGenerator") -> bool:
    """Whether the LoRA run of ``record`` was trained on the weights ``model`` serves: the same
    alias or folder as given, or the same resolved folder."""
    if record.model.source is not None and record.model.source == model.source:
        return True
    folders = {model.folder, model.record.model.source_path if model.record is not None else None}
    if model.record is not None:
        folders.add(RunFolder(Path(model.source).expanduser()).model_dir(model.settings.checkpoint))
    wanted = record.model.source_path
    return wanted is not None and Path(wanted).resolve() in {Path(f).resolve() for f in folders if f is not None}


def _check_entity_bias(models: dict[str, ServedModel]) -> None:
    """``--entity-bias`` needs an NER model to act on, and every NER model it acts on must decode with
    Viterbi (the ngram family's tagger decodes in one pass and takes no bias)."""
    taggers = [m for m in models.values() if m.kind == "token_classification"]
    if not taggers:
        raise ConfigError(
            f"serve: --entity-bias applies to NER (token_classification) runs; none of {', '.join(models)} is one"
        )
    for model in taggers:
        for member in ensemble_members(model.source):
            if RunFolder(Path(member).expanduser()).read_record().family == "ngram":
                raise ConfigError(
                    f"serve: --entity-bias: the ngram family's tagger ({member}) decodes in one pass and takes no bias"
                )
