"""``ServerState``: what the app holds on ``app.state``: the settings, the served models, the metrics,
and whether the server is loading, ready, failed or draining."""

import threading
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import ConfigError
from lmforge.models.segmenter import hold_segment_store, release_segment_store
from lmforge.runtime import set_threads
from lmforge.serving.compute import COMPUTE
from lmforge.serving.errors import InvalidRequest, ModelNotFound, NotReady
from lmforge.serving.keys import KeyFile
from lmforge.serving.metrics import Metrics
from lmforge.serving.services import ServedModel, open_models
from lmforge.serving.settings import ServeSettings


def open_audit_log(path: str | None):
    """The audit log, appended to line by line (None: no log)."""
    if not path:
        return None
    try:
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise ConfigError(f"--audit-log {path}: cannot write it ({exc.strerror or exc})") from None


class ServerState:
    def __init__(self, settings: ServeSettings, models: dict[str, ServedModel]):
        self.settings, self.models = settings, models
        self.keys = KeyFile(settings.api_keys) if settings.api_keys else None  # a bad file fails here
        self.audit = open_audit_log(settings.audit_log)
        self._holds_segments = False
        self.metrics = Metrics()
        self.loading = False
        self.ready = False
        self.failed: str | None = None
        self.draining = False
        self.in_flight = 0

    @classmethod
    def open(cls, settings: ServeSettings) -> "ServerState":
        """Settings checked and every source opened (a wrong path fails here); nothing loaded yet."""
        settings.check()
        return cls(settings, open_models(settings))

    def status(self) -> str:
        return "draining" if self.draining else "failed" if self.failed else "ok" if self.ready else "loading"

    def load(self) -> None:
        """Set the threads, then load every model (slow: run at start-up, while /health says 'loading').
        Both run on the compute thread, which every model call goes through."""
        self.loading = True
        if not self.settings.store_segments and not self._holds_segments:  # what clients send stays off the disk
            hold_segment_store()
            self._holds_segments = True
        try:
            COMPUTE.call(set_threads, self.settings.threads)
            for model in self.models.values():
                COMPUTE.call(model.load, self.metrics)
            self.ready = True
        except Exception as exc:  # reported by /health and the server log; the runner exits
            self.failed = f"{type(exc).__name__}: {exc}"
            raise

    def load_in_background(self, on_failure: Callable[[str], None] | None = None) -> threading.Thread:
        def target():
            try:
                self.load()
            except Exception:
                if on_failure:
                    on_failure(self.failed)

        self.loading = True
        thread = threading.Thread(target=target, name="load-models", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        for model in self.models.values():
            model.close()
        if self.audit is not None:
            self.audit.close()
        if self._holds_segments:
            release_segment_store()
            self._holds_segments = False

    def find(self, name: str | None, route: str) -> ServedModel:
        """The model a request names, or the one model serving ``route`` when it names none."""
        if name is None:
            serving = [m for m in self.models.values() if route in m.routes]
            if len(serving) != 1:
                why = (
                    f"{len(serving)} models serve {route} ({', '.join(m.name for m in serving)})"
                    if serving
                    else f"no model serves {route}"
                )
                raise InvalidRequest(f"'model' is required: {why}", param="model")
            return serving[0]
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(
                f"model '{name}' is not served here (served: {', '.join(self.models)})",
                param="model",
                code="model_not_found",
            )
        return model

    def check_serves(self, model: ServedModel, route: str) -> None:
        """Refuse while the models load, or when ``model`` does not serve ``route``."""
        if not self.ready:
            raise NotReady("the models are still loading")
        if route not in model.routes:
            raise InvalidRequest(
                f"model '{model.name}' ({model.kind}) does not serve {route}; it serves "
                f"{', '.join(model.routes) or 'nothing'}",
                param="model",
            )
