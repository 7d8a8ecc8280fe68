"""The task services: classify, tag entities, embed. Each checks the request's limits, runs its
inputs through the model's dynamic batcher, counts the tokens and shapes the answer."""

import asyncio
import base64

import torch

from lmforge.serving import protocol as p
from lmforge.serving.batching import Batcher, QueueFull
from lmforge.serving.errors import Busy, InvalidRequest
from lmforge.serving.metrics import Metrics
from lmforge.serving.services.inputs import check_lengths, texts_of
from lmforge.serving.services.served_models import ServedModel
from lmforge.serving.settings import ServeSettings


async def classify(
    model: ServedModel, body: p.ClassifyRequest, settings: ServeSettings, metrics: Metrics
) -> p.ClassifyResponse:
    texts = texts_of(body.input, settings)
    counts = await asyncio.to_thread(model.counts, texts)  # tokenizing: CPU work, off the event loop
    check_lengths(counts, model.limit, body.truncate)
    rows = await run_batch(model.batcher, texts)
    used = sum(min(c, model.limit) for c in counts)
    metrics.tokens_in.labels(model.name).inc(used)
    return p.ClassifyResponse(
        model=model.name,
        usage=p.Usage(prompt_tokens=used, total_tokens=used),
        data=[
            p.Classification(index=i, label=r["label"], score=r["score"], top_k=r["top_k"][: body.top_k])
            for i, r in enumerate(rows)
        ],
    )


async def tag(model: ServedModel, body: p.NerRequest, settings: ServeSettings, metrics: Metrics) -> p.NerResponse:
    texts = texts_of(body.input, settings)
    counts = await asyncio.to_thread(model.counts, texts)  # tokenizing: CPU work, off the event loop
    check_lengths(counts, model.ner_limit, None)
    rows = await run_batch(model.batcher, texts)
    metrics.tokens_in.labels(model.name).inc(sum(counts))
    data = [
        p.EntityList(
            index=i,
            entities=[
                p.Entity(start=e["start"], end=e["end"], text=e["text"], label=e["label"], score=e["score"])
                for e in r["entities"]
            ],
        )
        for i, r in enumerate(rows)
    ]
    return p.NerResponse(
        model=model.name, data=data, usage=p.Usage(prompt_tokens=sum(counts), total_tokens=sum(counts))
    )


async def embed(
    model: ServedModel, body: p.EmbeddingsRequest, settings: ServeSettings, metrics: Metrics
) -> p.EmbeddingsResponse:
    value = body.input
    if isinstance(value, list) and isinstance(value[0], int):
        value = [value]  # one input of token ids
    texts = texts_of(value, settings)  # type: ignore[arg-type]  # texts or token-id lists
    for i, item in enumerate(texts):
        if not isinstance(item, str) and max(item) >= model.embedder.vocab:
            raise InvalidRequest(f"input {i}: token id {max(item)} is not in this model's vocabulary", param="input")
    counts = await asyncio.to_thread(model.embedder.counts, texts)
    check_lengths(counts, model.limit, body.truncate)
    vectors = await run_batch(model.embedder.batcher, texts)
    metrics.tokens_in.labels(model.name).inc(sum(counts))
    data = [
        p.Embedding(index=i, embedding=v)
        for i, v in enumerate(encode_embeddings(vectors, body.encoding_format, body.dimensions))
    ]
    return p.EmbeddingsResponse(
        model=model.name, data=data, usage=p.Usage(prompt_tokens=sum(counts), total_tokens=sum(counts))
    )


async def run_batch(batcher: Batcher, inputs: list) -> list:
    """The inputs' outputs, once the batcher has run them (``Busy`` at once when its queue is full)."""
    try:
        future = batcher.submit(inputs)
    except QueueFull as exc:
        raise Busy(exc) from None
    return await asyncio.wrap_future(future)


def encode_embeddings(vectors: list[torch.Tensor], encoding: str, dimensions: int | None) -> list:
    """Each vector cut to ``dimensions`` (renormalized), as floats or base64 as OpenAI sends them."""
    out = []
    for vector in vectors:
        if dimensions is not None:
            if dimensions > vector.numel():
                raise InvalidRequest(
                    f"'dimensions' is {dimensions}; this model's embeddings have {vector.numel()}",
                    param="dimensions",
                )
            vector = torch.nn.functional.normalize(vector[:dimensions], dim=0)
        if encoding == "base64":  # little-endian float32
            out.append(base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode())
        else:
            out.append(vector.tolist())
    return out
