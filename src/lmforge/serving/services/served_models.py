"""The served models and what each route asks of them, with no HTTP in here.

A source (run folder, bundled alias or model folder) becomes one ``ServedModel`` of a kind chosen
by what it is: a classification run classifies, a token-classification run tags entities, a
causal or seq2seq LM generates, and an encoder (``minilm``, a masked-LM run, a transformer
classification or NER run) embeds. ``open_models`` checks every source at once (so a wrong path
fails before the server starts); ``load`` does the slow part and starts the worker threads.

Limits that depend on the model (input length, ``max_tokens`` against the context) are checked
here and raised as ``ApiError`` with the HTTP status the route answers.
"""

import base64
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.errors import ConfigError, LmforgeError, ModelError
from lmforge.models.embedding import mean_pool
from lmforge.serving import precision
from lmforge.serving.batching import Batcher
from lmforge.serving.settings import ServeSettings


class ApiError(Exception):
    """A request the server refuses: HTTP status, OpenAI error type, message, offending field."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}


ROUTES = {
    "classification": ["/v1/classify", "/v1/embeddings"],
    "token_classification": ["/v1/ner", "/v1/embeddings"],
    "embeddings": ["/v1/embeddings"],
    "generation": ["/v1/completions", "/v1/chat/completions"],
}


def split_source(text: str) -> tuple[str, str]:
    """``name=source`` or ``source`` (named after the folder or alias; an ensemble ``RUN1+RUN2``
    after its members' folders, joined by ``+``)."""
    if "=" in text and not Path(text).exists():
        name, source = text.split("=", 1)
        if name and source:
            return name, source
    members = ensemble_members(text)
    if len(members) > 1:
        return "+".join(Path(m.rstrip("/")).name for m in members), text
    return Path(text.rstrip("/")).name or text, text


def ensemble_members(source: str) -> list[str]:
    """The runs of an ensemble source ``RUN1+RUN2[+...]`` (one served model whose probabilities are
    the members' mean, as ``lmforge predict RUN1 --ensemble RUN2``); ``[source]`` for anything else,
    including a folder whose name holds a ``+``."""
    if "+" not in source or Path(source).exists():
        return [source]
    members = source.split("+")
    if not all(members):
        raise ModelError(f"{source}: an ensemble is RUN1+RUN2[+...], with no empty member")
    return members


class ServedModel:
    kind = ""

    def __init__(self, name: str, source: str, settings: ServeSettings, meta: dict | None = None):
        self.name, self.source, self.settings, self.meta = name, source, settings, meta or {}
        self.created = int(time.time())
        self.routes = list(ROUTES[self.kind])
        self.embedder = None
        self.dtype = "float32"

    def load(self, metrics) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for worker in ("batcher", "engine"):
            if getattr(self, worker, None) is not None:
                getattr(self, worker).close()
        if self.embedder is not None:
            self.embedder.batcher.close()

    def _batcher(self, fn, metrics, suffix=""):
        return Batcher(
            fn,
            self.settings.max_batch,
            self.settings.batch_wait_ms / 1000,
            self.settings.max_queue,
            name=f"{self.name}{suffix}",
            on_batch=lambda n: metrics.batch(self.name, n),
            on_queue=lambda n: metrics.queue(self.name + suffix, n),
        )


def _texts(value, settings: ServeSettings, param: str = "input") -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise ApiError(400, f"'{param}' is an empty list", param=param)
    if len(texts) > settings.max_inputs:
        raise ApiError(
            413,
            f"'{param}' has {len(texts)} items; the limit is {settings.max_inputs} per request",
            param=param,
            code="too_many_inputs",
        )
    return texts


def _token_counts(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def _check_lengths(counts: list[int], limit: int, truncate: bool | None) -> None:
    """413 for an input over ``limit`` tokens unless ``truncate`` (None: the route cannot cut)."""
    for i, count in enumerate(counts):
        if count > limit and not truncate:
            hint = "" if truncate is None else ' (send "truncate": true to cut it)'
            raise ApiError(
                413, f"input {i} is {count} tokens; the limit is {limit}{hint}", param="input", code="input_too_long"
            )


class Embedder:
    """Mean-pooled, L2-normalized last hidden states of an encoder (as sentence-transformers pools
    ``all-MiniLM-L6-v2``), batched dynamically."""

    def __init__(self, model, tokenizer, max_length: int, device, owner: ServedModel, metrics):
        self.model, self.tokenizer, self.max_length, self.device = model, tokenizer, max_length, device
        self.batcher = owner._batcher(self._embed, metrics, suffix=":embeddings")

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> list[torch.Tensor]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out = self.model(**batch, output_hidden_states=True)
        hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
        return list(mean_pool(hidden, batch["attention_mask"]).cpu())

    def counts(self, texts):
        return _token_counts(self.tokenizer, texts)


def embeddings_payload(vectors: list[torch.Tensor], encoding: str, dimensions: int | None) -> list:
    out = []
    for vector in vectors:
        if dimensions is not None:
            if dimensions > vector.numel():
                raise ApiError(
                    400,
                    f"'dimensions' is {dimensions}; this model's embeddings have {vector.numel()}",
                    param="dimensions",
                )
            vector = torch.nn.functional.normalize(vector[:dimensions], dim=0)
        if encoding == "base64":  # little-endian float32, as OpenAI sends them
            out.append(base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode())
        else:
            out.append(vector.tolist())
    return out


class RunModel(ServedModel):
    """A classification or token-classification run, through the same predictor as ``lmforge predict``."""

    def load(self, metrics) -> None:
        from lmforge.inference.predictor import RunPredictor

        members = ensemble_members(self.source)
        if len(members) > 1:
            self._load_ensemble(members, metrics)
            return
        self.predictor = RunPredictor(self.source, self.settings.checkpoint)
        self._decoding()
        self.limit = self.settings.max_input_tokens or self.predictor.max_length
        # NER reads a long text in overlapping windows, so its limit is a multiple of the window.
        self.ner_limit = self.settings.max_input_tokens or 16 * self.predictor.max_length
        fn = self._classify if self.kind == "classification" else self._tag
        family = self.meta.get("model", {}).get("family", "transformer")
        if self.kind == "classification" and family == "transformer" and self.predictor.backend == "torch":
            probes = precision.probe_texts(Path(self.source))
            self.dtype = precision.settle(
                self.settings.dtype,
                self.predictor.model,
                lambda: self._classify(probes),
                precision.same_classes,
                self.name,
            )
        self.batcher = self._batcher(fn, metrics)
        if family == "transformer":
            self.embedder = Embedder(
                self.predictor.model,
                self.predictor.tokenizer,
                self.predictor.max_length,
                self.predictor.device,
                self,
                metrics,
            )
        else:
            self.routes.remove("/v1/embeddings")

    def _load_ensemble(self, members: list[str], metrics) -> None:
        """Several runs as one model: the mean of their probabilities, decoded as ``lmforge predict
        --ensemble`` does. Inputs are limited by the shortest member; no embeddings route (whose
        encoder's vectors would it be?), and float32 throughout."""
        from lmforge.inference.ensemble import EnsemblePredictor
        from lmforge.inference.predictor import RunPredictor

        self.predictor = EnsemblePredictor(
            [RunPredictor(m, self.settings.checkpoint) for m in members], self.settings.combine
        )
        self._decoding()
        shortest = min(m.max_length for m in self.predictor.members)
        self.limit = self.settings.max_input_tokens or shortest
        self.ner_limit = self.settings.max_input_tokens or 16 * shortest
        self.batcher = self._batcher(self._classify if self.kind == "classification" else self._tag, metrics)
        self.routes.remove("/v1/embeddings")

    def _decoding(self) -> None:
        if self.kind == "token_classification" and self.settings.entity_bias:
            self.predictor.task.entity_bias = self.settings.entity_bias

    def _classify(self, texts: list[str]) -> list[dict]:
        return self.predictor.predict(texts, batch_size=self.settings.max_batch, top_k=len(self.predictor.labels.names))

    def _tag(self, texts: list[str]) -> list[dict]:
        return self.predictor.predict_entities(texts=texts, batch_size=self.settings.max_batch)

    def counts(self, texts: list[str]) -> list[int]:
        members = getattr(self.predictor, "members", [self.predictor])
        return [max(row) for row in zip(*(self._counts(m.tokenizer, texts) for m in members))]

    @staticmethod
    def _counts(tokenizer, texts: list[str]) -> list[int]:
        try:
            return _token_counts(tokenizer, texts)
        except TypeError:  # a vocabulary that is not a Hugging Face tokenizer
            return [len(t) for t in texts]


class Classifier(RunModel):
    kind = "classification"


class Tagger(RunModel):
    kind = "token_classification"


class EncoderModel(ServedModel):
    """An encoder folder or alias (``minilm``) or a masked-LM run: embeddings only."""

    kind = "embeddings"

    def load(self, metrics) -> None:
        import transformers

        folder = self.folder
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = (
            transformers.AutoModel.from_pretrained(
                folder, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
            )
            .to(self.device)
            .eval()
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        length = int(self.meta.get("max_length") or min(getattr(model.config, "max_position_embeddings", 512), 512))
        self.limit = self.settings.max_input_tokens or length
        self.embedder = Embedder(model, tokenizer, length, self.device, self, metrics)
        probes = precision.probe_texts(Path(self.source) if self.meta else None)
        self.dtype = precision.settle(
            self.settings.dtype, model, lambda: self.embedder._embed(probes), precision.same_embeddings, self.name
        )


class TextGenerator(ServedModel):
    """A causal or seq2seq LM: completions and chat, batched by the generation engine."""

    kind = "generation"

    def load(self, metrics) -> None:
        from lmforge.inference.generator import Generator
        from lmforge.serving.engine import GenerationEngine

        self.generator = Generator(self.source, self.settings.checkpoint, threads=self.settings.threads)
        self.context = self.generator.context
        self.engine = GenerationEngine(
            self.generator,
            self.settings.max_generation_batch,
            self.settings.max_queue,
            wait_s=self.settings.batch_wait_ms / 1000,
            on_batch=lambda n: metrics.batch(self.name, n),
            on_queue=lambda n: metrics.queue(self.name, n),
            name=self.name,
        )


@dataclass
class _Probe:
    kind: type
    folder: Path | None
    meta: dict


def _probe(source: str, checkpoint: str) -> _Probe:
    """What a source is, from its files alone (no weights loaded)."""
    from lmforge.tracking.run_folder import RunFolder

    members = ensemble_members(source)
    if len(members) > 1:
        probes = [_probe(m, checkpoint) for m in members]
        tasks = [p.meta.get("task") or "a model folder" for p in probes]
        if any(p.kind not in (Classifier, Tagger) for p in probes) or len(set(tasks)) > 1:
            raise ModelError(
                f"{source}: an ensemble's members must all be classification or all "
                f"token_classification runs (these are: {', '.join(tasks)})"
            )
        labels = [sorted(p.meta.get("labels", {}).get("names", [])) for p in probes]
        for member, names in zip(members[1:], labels[1:]):
            if names != labels[0]:
                raise ModelError(
                    f"{member}: its labels are not those of {members[0]}; an ensemble's members predict the same labels"
                )
        return probes[0]
    path = Path(source).expanduser()
    if (path / "lmforge.json").is_file():
        run = RunFolder(path)
        meta = run.read_meta()
        if meta.get("model", {}).get("family") == "prompt":
            raise ModelError(
                f"{source}: a prompt run (lmforge prompt) has no trained model; serve its "
                f"model, {meta['model'].get('source')}, instead"
            )
        task = meta.get("task")
        folder = run.model_dir(checkpoint)
        kinds = {
            "classification": Classifier,
            "token_classification": Tagger,
            "causal_lm": TextGenerator,
            "seq2seq": TextGenerator,
            "masked_lm": EncoderModel,
        }
        if task not in kinds:
            raise ModelError(f"{source}: a {task} run, which the server cannot serve")
        return _Probe(kinds[task], folder, meta)
    import json

    from lmforge.models.transformer import resolve_source

    folder, _ = resolve_source(source)
    config = json.loads((folder / "config.json").read_text())
    architectures = " ".join(config.get("architectures") or [])
    generative = config.get("is_encoder_decoder") or "CausalLM" in architectures or "LMHead" in architectures
    return _Probe(TextGenerator if generative else EncoderModel, folder, {})


def open_models(settings: ServeSettings) -> dict[str, ServedModel]:
    """Name -> served model for every source, checked but not loaded."""
    models: dict[str, ServedModel] = {}
    for text in settings.sources:
        name, source = split_source(text)
        if name in models:
            raise ModelError(f"serve: two models are named '{name}'; name them: NAME=PATH")
        try:
            probe = _probe(source, settings.checkpoint)
        except LmforgeError:
            raise
        except (OSError, ValueError) as exc:
            raise ModelError(f"{source}: cannot serve it ({exc})") from None
        model = probe.kind(name, source, settings, probe.meta)
        model.folder = probe.folder
        models[name] = model
    if settings.entity_bias:
        _check_entity_bias(models)
    if settings.combine != "mean" and not any(len(ensemble_members(m.source)) > 1 for m in models.values()):
        raise ConfigError(
            f"serve: --combine {settings.combine} combines the members of an ensemble "
            f"(NAME=RUN1+RUN2); none of {', '.join(models)} is one"
        )
    return models


def _check_entity_bias(models: dict[str, ServedModel]) -> None:
    """``--entity-bias`` needs an NER model to act on, and every NER model it acts on must decode with
    Viterbi (the ngram family's tagger decodes in one pass and takes no bias)."""
    from lmforge.tracking.run_folder import RunFolder

    taggers = [m for m in models.values() if m.kind == "token_classification"]
    if not taggers:
        raise ConfigError(
            f"serve: --entity-bias applies to NER (token_classification) runs; none of {', '.join(models)} is one"
        )
    for model in taggers:
        for member in ensemble_members(model.source):
            if RunFolder(Path(member).expanduser()).read_meta().get("model", {}).get("family") == "ngram":
                raise ConfigError(
                    f"serve: --entity-bias: the ngram family's tagger ({member}) decodes in one pass and takes no bias"
                )
