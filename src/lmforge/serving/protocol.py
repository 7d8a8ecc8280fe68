"""Request and response models: the task routes' own, and OpenAI's shapes for the rest.

Requests ignore fields they do not know (OpenAI clients send vendor fields) but check the types and
ranges of the ones they use; the limits that are settings (inputs per request, ``n``, stop strings,
``max_tokens``) are checked by the services, which know them.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Texts = str | Annotated[list[str], Field(min_length=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # true is not 1, "1" is not 1


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None


# ---- classification ---------------------------------------------------------------------------


class ClassifyRequest(_Request):
    model: str | None = Field(None, description="served model name (optional when one model classifies)")
    input: Texts = Field(..., description="a text or a list of texts")
    top_k: int = Field(3, ge=1, le=1000, description="label probabilities to list per input")
    truncate: bool = Field(False, description="cut inputs over the length limit instead of answering 413")


class LabelScore(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    index: int
    label: str
    score: float
    top_k: list[LabelScore]


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Classification]
    usage: Usage


# ---- named entities ---------------------------------------------------------------------------


class NerRequest(_Request):
    model: str | None = Field(None, description="served model name (optional when one model tags)")
    input: Texts


class Entity(BaseModel):
    start: int = Field(..., description="character offset of the first character")
    end: int = Field(..., description="character offset after the last character")
    text: str
    label: str
    score: float


class EntityList(BaseModel):
    index: int
    entities: list[Entity]


class NerResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[EntityList]
    usage: Usage


# ---- embeddings -------------------------------------------------------------------------------


class EmbeddingsRequest(_Request):
    model: str
    input: Texts
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    truncate: bool = Field(False, description="cut inputs over the length limit instead of answering 413")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Embedding]
    usage: Usage


# ---- completions ------------------------------------------------------------------------------


class _Sampling(_Request):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    stream_options: dict | None = None


class CompletionRequest(_Sampling):
    prompt: Texts
    max_tokens: int | None = Field(16, ge=1)


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


# ---- models and health ------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lmforge"
    task: str = Field(..., description="classification, token_classification, embeddings or generation")
    routes: list[str]
    dtype: str = Field(..., description="float type the model runs in")
    entity_bias: float | None = Field(
        None,
        description="token_classification: the bonus decoding adds to "
        "the log probability of every tag but O (serve --entity-bias); "
        "null for other tasks",
    )
    combine: str | None = Field(
        None,
        description="ensembles (NAME=RUN1+RUN2): how the members combine, "
        "mean (probabilities averaged) or vote (entity spans or labels); null for one model",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading", "draining", "failed"]
    models: list[str]
