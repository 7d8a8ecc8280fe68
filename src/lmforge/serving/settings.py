"""Server settings: every limit the server enforces, with its default. Each field is also a flag of
``lmforge serve`` (``cli/flags.py``): ``metadata`` holds its help and choices."""

import math
import re
from dataclasses import asdict, dataclass, field

from lmforge.errors import ConfigError
from lmforge.masking.rules import RULE_TYPES
from lmforge.runtime import resolve_device

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    sources: list[str] = field(
        default_factory=list,
        metadata={
            "positional": True,
            "metavar": "MODEL",
            "help": "run folder, bundled alias (minilm, smollm2) or model folder; NAME=PATH names it; "
            "RUN1+RUN2[+...] serves classification or NER runs as one ensemble",
        },
    )
    """What to serve: run folders, bundled aliases or model folders, each optionally ``name=source``."""
    host: str = field(
        default="127.0.0.1", metadata={"help": "address to bind (default %(default)s; others need --api-key)"}
    )
    port: int = 8000
    api_key: str | None = field(
        default=None,
        metadata={"help": "require 'Authorization: Bearer KEY' on every route but /health (default: $LMFORGE_API_KEY)"},
    )
    """Bearer key every route but ``/health`` requires (None: no key, loopback only)."""
    allow_insecure: bool = field(default=False, metadata={"help": "allow a non-loopback host without a key"})
    api_keys: str | None = field(
        default=None,
        metadata={"help": "a YAML file of hashed keys with scopes and rates (reloaded when it changes)"},
    )
    """Keys with scopes (infer, embed, admin) and requests per minute; see serving/keys.py."""
    allowed_hosts: list[str] = field(
        default_factory=list,
        metadata={"help": "Host headers to answer (repeatable; e.g. api.example.com); others get 400 (default: any)"},
    )
    """Guards against DNS rebinding: a browser page on another name cannot reach the server."""
    mask_responses: list[str] = field(
        default_factory=list,
        metadata={
            "metavar": "TYPE",
            "help": "mask this kind of personal data in generated text, streamed or not: email, phone, cn_id, "
            "bank_card or ip (repeatable; default: none)",
        },
    )
    """Rule types (``masking/rules.py``) replaced by ``[TYPE]`` in completions and chat answers."""
    audit_log: str | None = field(
        default=None, metadata={"help": "append one JSON line per request here: time, key id, route, status"}
    )
    """Allow a non-loopback host without an API key."""
    adapters: list[str] = field(
        default_factory=list,
        metadata={
            "metavar": "NAME=RUN",
            "help": "serve a LoRA run as model NAME on the base model it was trained from, which must be "
            "served too: one copy of the base for all its adapters, requests for different adapters "
            "decoded in one batch; repeat for more",
        },
    )
    """LoRA runs served on their base model (``NAME=RUN``; a bare ``RUN`` is named after its folder)."""
    admin_key: str | None = None
    """Key of the admin routes (``/v1/admin/...``: adapters loaded and unloaded at run time); read
    from ``$LMFORGE_ADMIN_KEY`` only, never a flag (argv is visible to other users). None: no admin
    routes."""
    cors_origins: list[str] = field(
        default_factory=list,
        metadata={
            "metavar": "ORIGIN",
            "help": "let web pages from ORIGIN (https://host[:port], or * for any) call the API from a "
            "browser; repeat for more (default: none)",
        },
    )
    """Origins whose web pages may call the API from a browser (CORS); none by default."""
    workers: int = field(default=1, metadata={"help": "server processes, each with the models"})
    max_body_bytes: int = 2 * 1024 * 1024
    max_inputs: int = field(default=64, metadata={"help": "texts or prompts per request"})
    """Texts per classify/ner/embeddings request and prompts per completion request."""
    max_input_tokens: int | None = field(
        default=None, metadata={"help": "longest encoder input (default: the model's)"}
    )
    """Longest input in tokens for the encoder routes (default: each model's own maximum)."""
    max_n: int = field(default=4, metadata={"help": "most completions per prompt"})
    max_stop: int = field(default=4, metadata={"help": "most stop strings per request"})
    default_max_tokens: int = field(
        default=256, metadata={"help": "chat reply length when the request gives no max_tokens"}
    )
    """Chat replies without ``max_tokens`` stop here (or at the context's end, if sooner)."""
    max_batch: int | None = field(
        default=None, metadata={"help": "encoder routes: inputs per batch (default: 8 on CPU, 32 on GPU)"}
    )
    """Encoder routes: most inputs run as one padded batch (default: 32 on a GPU, 8 on a CPU, where a
    bigger batch saves little per input and smaller ones let HTTP work overlap the model's)."""
    batch_wait_ms: float = field(default=5.0, metadata={"help": "encoder routes: how long a batch waits to fill"})
    """Encoder routes: how long the first request of a batch waits for others to join it."""
    max_generation_batch: int = field(default=8, metadata={"help": "sequences decoded together"})
    """Generation: most sequences decoded together step by step."""
    max_queue: int = field(default=64, metadata={"help": "waiting requests per model before 429"})
    """Requests waiting per model beyond which the server answers 429 at once."""
    drain_timeout: float = field(default=30.0, metadata={"help": "seconds to finish in-flight requests on SIGTERM"})
    """Seconds to finish in-flight requests after SIGTERM."""
    header_timeout: float = field(default=10.0, metadata={"help": "seconds a client has to send a request's headers"})
    """A connection that has not sent a whole request line and headers in this time is closed."""
    body_timeout: float = field(default=30.0, metadata={"help": "seconds a client has to send a request's body"})
    """A body not received whole in this time answers 408."""
    keep_alive: float = field(default=5.0, metadata={"help": "seconds an idle connection is kept open"})
    max_connections: int = field(default=1024, metadata={"help": "open connections at once; beyond, 503"})
    store_segments: bool = field(
        default=False,
        metadata={
            "help": "keep served Chinese texts' words in the segmenter's disk cache (off: nothing sent is stored)"
        },
    )
    threads: int | None = field(default=None, metadata={"help": "CPU threads (default: all cores)"})
    device: str = field(
        default="auto",
        metadata={"help": "auto | cpu | cuda | cuda:N: where every model runs (default: auto: CUDA when there is one)"},
    )
    """Where the models run: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    engine: str = field(
        default="auto",
        metadata={
            "choices": ("auto", "torch", "llama_cpp"),
            "help": "generation: auto = llama.cpp for GGUF models (when installed), else PyTorch",
        },
    )
    """Generation: ``llama_cpp`` runs GGUF models on llama.cpp, ``torch`` on PyTorch; ``auto`` picks
    llama.cpp for a GGUF model when llama-cpp-python is installed."""
    checkpoint: str = field(default="auto", metadata={"choices": ("auto", "best", "model")})
    dtype: str = field(
        default="auto",
        metadata={
            "choices": ("auto", "float32", "bfloat16", "int8"),
            "help": "auto = the fastest type the hardware computes natively that answers like float32 "
            "(generation: int8 weights, then bfloat16; encoders: bfloat16); int8: generation models (encoders: auto)",
        },
    )
    """float32, bfloat16, int8 (generation models on PyTorch: int8 linear weights, bf16 activations), or
    auto: the fastest the hardware computes natively that is checked to answer like float32."""
    entity_bias: float = field(
        default=0.0,
        metadata={
            "metavar": "B",
            "help": "NER models: add B to the log-score of every tag but O before decoding, as predict "
            "--entity-bias does",
        },
    )
    """NER models: added to the log-score of every tag but O before decoding, as ``lmforge predict
    --entity-bias`` does (e.g. the ``whole_data_bias`` that ``eval --tune-entity-bias`` reports)."""
    combine: str = field(
        default="mean",
        metadata={
            "choices": ("mean", "vote"),
            "help": "ensembles (RUN1+RUN2): mean (average their probabilities; default) or vote (NER: "
            "the entity spans more than half the members predict; classification: the label most "
            "members choose)",
        },
    )
    """Ensembles (``NAME=RUN1+RUN2``): ``mean`` averages the members' probabilities; ``vote`` keeps the
    entity spans more than half the members predict (NER) or the label most members choose
    (classification), as ``predict --combine vote`` does."""

    def __post_init__(self):
        if self.max_batch is None:  # a wrong device is a ConfigError here, before any model loads
            self.max_batch = 32 if resolve_device(self.device).type == "cuda" else 8

    def check(self) -> None:
        if not self.sources:
            raise ConfigError("serve: give at least one run folder, bundled alias or model folder")
        if self.api_key and self.api_keys:
            raise ConfigError("serve: give --api-key or --api-keys FILE, not both")
        if self.host not in LOOPBACK and not self.api_key and not self.api_keys and not self.allow_insecure:
            raise ConfigError(
                f"serve: binding to {self.host} without an API key would expose the models to "
                "the network; set --api-key (or LMFORGE_API_KEY), or pass --allow-insecure"
            )
        for name in (
            "max_body_bytes",
            "max_inputs",
            "max_n",
            "max_stop",
            "default_max_tokens",
            "max_batch",
            "max_generation_batch",
            "max_queue",
            "workers",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve: {name.replace('_', '-')} must be at least 1")
        if self.batch_wait_ms < 0 or self.drain_timeout < 0:
            raise ConfigError("serve: batch-wait-ms and drain-timeout must be >= 0")
        for name in ("header_timeout", "body_timeout", "keep_alive"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"serve: {name.replace('_', '-')} {value}: give a number of seconds above 0")
        if self.dtype not in ("auto", "float32", "bfloat16", "int8"):
            raise ConfigError(f"serve: dtype '{self.dtype}' is not one of auto, float32, bfloat16, int8")
        if not math.isfinite(self.entity_bias):
            raise ConfigError(f"serve: entity-bias {self.entity_bias}: give a finite number (e.g. 0.5)")
        if self.engine not in ("auto", "torch", "llama_cpp"):
            raise ConfigError(f"serve: engine '{self.engine}' is not one of auto, torch, llama_cpp")
        if self.combine not in ("mean", "vote"):
            raise ConfigError(f"serve: combine '{self.combine}' is not one of mean, vote")
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ConfigError(
                    f"serve: cors-origins '{origin}': give an origin such as https://app.example.com, or *"
                )
        for kind in self.mask_responses:
            if kind not in RULE_TYPES:
                raise ConfigError(
                    f"serve: mask-responses '{kind}': give one of {', '.join(RULE_TYPES)} (names need an NER run: "
                    "mask with lmforge mask --ner instead)"
                )
        if self.max_input_tokens is not None and self.max_input_tokens < 1:
            raise ConfigError("serve: max-input-tokens must be at least 1")
        resolve_device(self.device)

    def to_dict(self) -> dict:
        return asdict(self)
