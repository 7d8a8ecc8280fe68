"""Run the app under uvicorn: models load in the background while ``/health`` answers 503
"loading"; SIGTERM (or Ctrl-C) starts a drain — new requests get 503, in-flight ones finish within
``drain_timeout`` — and the process exits 0. A second signal stops at once.

With ``--workers N`` uvicorn starts N processes, each loading the models (``app_from_env`` rebuilds
the settings from the environment); each worker then drains with uvicorn's own graceful shutdown,
which stops accepting connections and waits for in-flight requests.
"""

import json
import logging
import os
import signal
import threading
import time

from lmforge._optional import require
from lmforge.serving.app import ServerState, create_app
from lmforge.serving.services import open_models
from lmforge.serving.settings import ServeSettings

log = logging.getLogger("lmforge")
SETTINGS_ENV = "LMFORGE_SERVE_SETTINGS"


def build(settings: ServeSettings) -> tuple[ServerState, object]:
    settings.check()
    state = ServerState(settings, open_models(settings))
    return state, create_app(state)


def app_from_env():
    """uvicorn factory for worker processes: settings come from the environment, models load in a thread."""
    from lmforge.runtime import quiet_libraries, setup_logging

    quiet_libraries()
    setup_logging()
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_ENV]))
    state, app = build(settings)
    state.load_in_background(on_failure=lambda why: (log.error("loading failed: %s", why), os._exit(1)))
    return app


def serve(settings: ServeSettings) -> int:
    uvicorn = require("uvicorn", "lmforge[serve]", "lmforge serve")
    if settings.workers > 1:
        settings.check()
        if settings.threads is None:  # share the cores between the workers' compute threads
            from lmforge.runtime import set_threads

            settings.threads = max(1, set_threads(None) // settings.workers)
        open_models(settings)  # fail here, once, on a wrong path
        os.environ[SETTINGS_ENV] = json.dumps(settings.to_dict())
        uvicorn.run(
            "lmforge.serving.server:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="warning",
            timeout_graceful_shutdown=int(settings.drain_timeout) or None,
        )
        return 0
    state, app = build(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
    )
    server = DrainingServer(config, state, settings.drain_timeout)
    failed = []

    def on_failure(why):
        failed.append(why)
        log.error("loading failed: %s", why)
        server.should_exit = True

    state.load_in_background(on_failure)
    log.info(
        "serving %s on http://%s:%d (%s)",
        ", ".join(state.models),
        settings.host,
        settings.port,
        "API key required" if settings.api_key else "no API key",
    )
    server.run()
    state.close()
    return 1 if failed else 0


def DrainingServer(config, state: ServerState, drain_timeout: float):
    """A uvicorn server whose first SIGTERM/SIGINT drains before it stops (uvicorn is imported
    lazily, so the subclass is made here)."""
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # Not uvicorn's handler: it re-raises the signal after shutdown, and the exit code must be 0.
            if state.draining:  # a second signal: stop now
                self.should_exit = self.force_exit = True
                return
            state.draining = True
            log.info(
                "signal %s: draining (%d in flight, up to %.0f s)",
                signal.Signals(sig).name,
                state.in_flight,
                drain_timeout,
            )
            threading.Thread(target=self._drain, daemon=True).start()

        def _drain(self):
            deadline = time.monotonic() + drain_timeout
            while state.in_flight > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            self.should_exit = True

    return _DrainingServer(config)
