"""Request and response models: the task routes' own, and OpenAI's shapes for the rest.

Requests ignore fields they do not know (OpenAI clients send vendor fields) but check the types and
ranges of the ones they use; the limits that are settings (inputs per request, ``n``, stop strings,
``max_tokens``) are checked by the services, which know them.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

Texts = str | Annotated[list[str], Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class _Request(BaseModel):
    # true is not 1, "1" is not 1; NaN and Infinity are no number (Python's JSON parser reads them)
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


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
    input: Texts | TokenIds | Annotated[list[TokenIds], Field(min_length=1)] = Field(
        ..., description="a text, a list of texts, a list of token ids or a list of those"
    )
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

Prompt = str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]

# OpenAI parameters this server does not implement: a request that sets one (to anything but null
# or the value that means "off") is answered 400 naming it, never served as if it were not there.
UNSUPPORTED: dict[str, tuple] = {
    "functions": (None, []),
    "function_call": (None, "none"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "store": (None, False),
}


class _Sampling(_Request):
    """What completions and chat share. ``null`` is accepted wherever OpenAI allows it and means
    the default."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description="default 1")
    top_p: float | None = Field(None, gt=0, le=1, description="default 1")
    n: int | None = Field(None, ge=1, description="default 1")
    stream: bool | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream_options: dict | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None, description="token id (as a string) -> bias added to its logit, -100 to 100"
    )
    user: str | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    service_tier: str | None = None

    def unsupported(self) -> str | None:
        """The first parameter this server does not implement that the request sets."""
        extra = self.model_extra or {}
        for name, off in UNSUPPORTED.items():
            if name in extra and extra[name] not in off:
                return name
        return None


class CompletionRequest(_Sampling):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    prompt: Prompt = Field(..., description="a string, a list of strings, a list of token ids or a list of those")
    max_tokens: int | None = Field(16, ge=0, description="0 with echo: the prompt's log-probabilities only")
    logprobs: int | None = Field(None, ge=0, le=20, description="log-probabilities of the top tokens per position")
    echo: bool | None = Field(None, description="the prompt before the completion (and its logprobs)")
    suffix: str | None = Field(None, description="text after the completion: models with fill-in-the-middle tokens")
    best_of: int | None = Field(None, ge=1, description="rows generated per prompt; the n most likely are returned")


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TextPart(_Request):
    type: Literal["text"]
    text: str


class FunctionCall(_Request):
    name: str
    arguments: str


class ToolCall(_Request):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def for_template(self) -> dict:
        """The message as chat templates read it (Hugging Face's message format)."""
        message: dict = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            message["name"] = self.name
        return message


class JsonSchemaFormat(_Request):
    name: str = Field(..., max_length=64)
    description: str | None = None
    schema_: dict | None = Field(None, alias="schema", description="a JSON schema; absent: any JSON")
    strict: bool | None = Field(None, description="the reply always follows the schema, strict or not")


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionSpec(_Request):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict | None = Field(None, description="JSON schema of the arguments (an object)")
    strict: bool | None = Field(None, description="forced calls always follow the schema, strict or not")


class Tool(_Request):
    type: Literal["function"]
    function: FunctionSpec


class FunctionName(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: FunctionName


class ChatRequest(_Sampling):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="default: auto with tools, none without"
    )
    response_format: ResponseFormat | None = Field(
        None, description="json_object or json_schema: the reply is JSON that parses (and validates)"
    )
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = Field(None, description="log-probabilities of the reply's tokens")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="alternatives per token (needs logprobs)")


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="left out when the reply calls no tool")

    @model_serializer(mode="wrap")
    def _without_empty_calls(self, handler):
        data = handler(self)
        if data.get("tool_calls") is None:
            data.pop("tool_calls", None)  # OpenAI's schema: an array when present
        return data


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: ChatLogprobs | None = None


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
    base: str | None = Field(None, description="LoRA adapters (serve --adapters): the served model they adapt")


class AdapterRequest(_Request):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the model name requests will use")
    run: str = Field(..., min_length=1, description="a LoRA run folder on the server, trained from a served model")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading", "draining", "failed"]
    models: list[str] | None = Field(None, description="the served models' names: only to a client with the key")
