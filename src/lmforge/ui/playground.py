"""The playground: one model at a time (a run under the root, or the bundled ``smollm2`` for chat),
served by the serving layer's own app. The page calls ``/play/v1/classify``, ``/play/v1/ner`` and
``/play/v1/chat/completions`` (streamed), which reach that app unchanged: the same validation,
limits, batching and OpenAI-style errors as ``lmforge serve``. Choosing another model closes the
one before (one model's memory at a time), once the requests it is answering have finished.

Explanations (``explain``) go through ``lmforge.explain.open_explainer`` on a thread of their own,
one at a time, the last explainer kept for the next text.
"""

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import ConfigError
from lmforge.explain.open import OpenedExplainer, open_explainer
from lmforge.models.bundled import BUNDLED
from lmforge.serving.app import create_app
from lmforge.serving.middleware import error_body, send_json
from lmforge.serving.settings import ServeSettings
from lmforge.serving.state import ServerState
from lmforge.ui.runs import resolve
from lmforge.ui.settings import UiSettings

PLAY_PREFIX = "/play"
GENERATORS = ("smollm2",)  # bundled models the playground offers beside the runs
MAX_EXPLAIN_CHARS = 2000
SERVED_AS = "play"  # the model's name in /play requests ("model": "play"; optional for classify and ner)


class Playground:
    def __init__(self, root: Path, settings: UiSettings):
        self.root, self.settings = root, settings
        self.name: str | None = None
        self.state: ServerState | None = None
        self.app: Callable | None = None  # the chosen model's serving app (ASGI)
        self._explainer: tuple[str, OpenedExplainer] | None = None
        self._explain_lock = threading.Lock()

    def source(self, name: str) -> str:
        """The path (or bundled alias) the playground loads for ``name``."""
        if name in GENERATORS and name in BUNDLED:
            return name
        return str(resolve(self.root, name))

    def choose(self, name: str) -> dict:
        """Start loading ``name`` (in the background) and close the model before."""
        source = self.source(name)
        serve = ServeSettings(
            sources=[f"{SERVED_AS}={source}"],
            threads=self.settings.threads,
            device=self.settings.device,
            max_queue=16,
        )
        state = ServerState.open(serve)  # a source it cannot serve fails here, in one line
        old = self.state
        self.name, self.state, self.app = name, state, create_app(state)
        state.load_in_background()
        if old is not None:
            threading.Thread(target=old.close, name="close-playground", daemon=True).start()
        return self.status()

    def status(self) -> dict:
        if self.state is None:
            return {"model": None, "status": "none"}
        model = self.state.models[SERVED_AS]
        out = {
            "model": self.name,
            "status": self.state.status(),
            "kind": model.kind,
            "served_as": SERVED_AS,
            "routes": [r for r in model.routes if r != "/v1/embeddings"],
        }
        if self.state.failed:
            out["error"] = self.state.failed
        return out

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
            self.state = None

    async def __call__(self, scope, receive, send) -> None:
        """``/play/...`` → the chosen model's serving app (503 when none is chosen)."""
        if self.app is None:
            body = error_body(
                "no model chosen in the playground: choose a run first", "invalid_request_error", "no_model"
            )
            return await send_json(send, 503, body)
        inner = dict(scope)
        inner["path"] = scope["path"][len(PLAY_PREFIX) :] or "/"
        inner["raw_path"] = inner["path"].encode()
        await self.app(inner, receive, send)

    def explain(self, name: str, text: str, method: str | None, target: str | None) -> list[dict]:
        """Attributions of ``text`` by run ``name`` (blocking: call it on a thread)."""
        if not text.strip():
            raise ConfigError("text: give a text to explain")
        if len(text) > MAX_EXPLAIN_CHARS:
            raise ConfigError(f"text: at most {MAX_EXPLAIN_CHARS} characters")
        source = self.source(name)
        with self._explain_lock:
            if self._explainer is None or self._explainer[0] != source:
                self._explainer = None  # the old one's memory goes first
                self._explainer = (source, open_explainer(source, "auto", self.settings.device))
            found = self._explainer[1].explain(text, method or None, target or None, steps=32, max_new_tokens=12)
        return [a.as_json() for a in found]

    async def explain_async(self, name: str, text: str, method: str | None, target: str | None) -> list[dict]:
        return await asyncio.to_thread(self.explain, name, text, method, target)
