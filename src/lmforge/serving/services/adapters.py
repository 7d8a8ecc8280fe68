"""Adapters loaded and unloaded while the server runs (the admin routes): a LoRA run joins its base
model's weights between two decoding steps, and leaves once no request uses it."""

import time

from lmforge.errors import LmforgeError
from lmforge.inference.llama_cpp import LlamaCppGenerator
from lmforge.serving.compute import COMPUTE
from lmforge.serving.errors import InvalidRequest, ModelNotFound
from lmforge.serving.services.served_models import AdapterModel, open_adapter
from lmforge.serving.state import ServerState


def load_adapter(state: ServerState, name: str, run: str) -> AdapterModel:
    """The adapter, checked and loaded (the caller puts it in ``state.models``)."""
    try:
        adapter = open_adapter(name, run, state.models, state.settings)
    except LmforgeError as exc:
        raise InvalidRequest(str(exc).replace("serve --adapters ", ""), param="run") from None
    if isinstance(adapter.base.generator, LlamaCppGenerator):
        raise InvalidRequest(
            f"{adapter.base.name} runs on llama.cpp; adapters need it on PyTorch (serve --engine torch)", param="run"
        )
    if adapter.base.generator.weights == "int8":
        raise InvalidRequest(
            f"{adapter.base.name} runs with int8 weights; LoRA adapters need float ones (serve --dtype bfloat16)",
            param="run",
        )
    COMPUTE.call(adapter.load, state.metrics)
    return adapter


def unload_adapter(state: ServerState, adapter: AdapterModel) -> None:
    """Unload an adapter already out of ``state.models``, once the requests using it are done (at
    most ``drain_timeout`` seconds; they are cancelled after that)."""
    engine = adapter.base.engine
    deadline = time.monotonic() + state.settings.drain_timeout
    while engine is not None and engine.uses(adapter.peft_name):
        if time.monotonic() > deadline:
            for row in [*engine.running]:
                if row.adapter == adapter.peft_name:
                    row.job.cancelled.set()
            time.sleep(0.1)
            break
        time.sleep(0.02)
    COMPUTE.call(adapter.base.remove_adapter, adapter.peft_name)


def adapter_named(state: ServerState, name: str) -> AdapterModel:
    model = state.models.get(name)
    if not isinstance(model, AdapterModel):
        raise ModelNotFound(f"no adapter named '{name}' is served", param="name", code="model_not_found")
    return model
