"""Run the app under uvicorn: models load in the background while ``/health`` answers 503
"loading"; SIGTERM (or Ctrl-C) starts a drain — new requests get 503, in-flight ones finish within
``drain_timeout`` — and the process exits 0. A second signal stops at once.

With ``--workers N`` uvicorn starts N processes, each loading the models (``app_from_env`` rebuilds
the settings from the environment); each worker then drains with uvicorn's own graceful shutdown,
which stops accepting connections and waits for in-flight requests.
"""

import atexit
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time

from lmforge._optional import require
from lmforge.runtime import quiet_libraries, set_threads, setup_logging
from lmforge.serving.settings import ServeSettings

# The serve extra, named before anything imports it.
uvicorn = require("uvicorn", "lmforge[serve]", "lmforge serve")
require("fastapi", "lmforge[serve]", "lmforge serve")

from lmforge.serving.app import create_app  # noqa: E402
from lmforge.serving.connections import GuardedH11  # noqa: E402
from lmforge.serving.metrics import MULTIPROCESS_ENV  # noqa: E402
from lmforge.serving.services import open_models  # noqa: E402
from lmforge.serving.state import ServerState  # noqa: E402

log = logging.getLogger("lmforge")
SETTINGS_ENV = "LMFORGE_SERVE_SETTINGS"


def app_from_env():
    """uvicorn factory for worker processes: settings come from the environment, models load at start-up."""
    quiet_libraries()
    setup_logging()
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_ENV]))
    GuardedH11.header_timeout = settings.header_timeout  # this worker's connections
    if os.environ.get(MULTIPROCESS_ENV):  # a worker that ends leaves the live gauges
        pid = os.getpid()
        atexit.register(lambda: require("prometheus_client.multiprocess").mark_process_dead(pid))

    def on_failure(why: str) -> None:
        log.error("loading failed: %s", why)
        os._exit(1)

    return create_app(ServerState.open(settings), on_failure)


def connection_limits(settings: ServeSettings) -> dict:
    """uvicorn's options for what connections may hold (``connections.py``)."""
    GuardedH11.header_timeout = settings.header_timeout
    return {
        "http": GuardedH11,
        "timeout_keep_alive": settings.keep_alive,
        "limit_concurrency": settings.max_connections,
        "ws": "none",  # no WebSocket routes: an upgrade request is answered as plain HTTP, never upgraded
    }


def serve(settings: ServeSettings) -> int:
    if settings.workers > 1:
        return _serve_workers(settings)
    state = ServerState.open(settings)
    failed = []

    def on_failure(why: str) -> None:
        failed.append(why)
        log.error("loading failed: %s", why)
        server.should_exit = True

    config = uvicorn.Config(
        create_app(state, on_failure),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
        **connection_limits(settings),
    )
    server = DrainingServer(config, state, settings.drain_timeout)
    log.info(
        "serving %s on http://%s:%d (%s)",
        ", ".join(state.models),
        settings.host,
        settings.port,
        "API key required" if settings.api_key else "no API key",
    )
    server.run()  # the app loads the models at start-up and closes them at shutdown
    return 1 if failed else 0


def _serve_workers(settings: ServeSettings) -> int:
    settings.check()
    if settings.threads is None:  # share the cores between the workers' compute threads
        settings.threads = max(1, set_threads(None) // settings.workers)
    open_models(settings)  # fail here, once, on a wrong path
    os.environ[SETTINGS_ENV] = json.dumps(settings.to_dict())
    # One /metrics view over the workers (serving/metrics.py): a private folder of this run's own.
    shared = tempfile.mkdtemp(prefix="lmforge-metrics-")
    os.environ[MULTIPROCESS_ENV] = shared
    try:
        _run_workers(settings)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    return 0


def _run_workers(settings: ServeSettings) -> None:
    uvicorn.run(
        "lmforge.serving.server:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.drain_timeout) or None,
        **connection_limits(settings),
    )


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains before it stops; a second stops at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout: float):
        super().__init__(config)
        self.state, self.drain_timeout = state, drain_timeout

    def handle_exit(self, sig, frame):
        # Not uvicorn's handler: it re-raises the signal after shutdown, and the exit code must be 0.
        if self.state.draining:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        self.state.draining = True
        log.info(
            "signal %s: draining (%d in flight, up to %.0f s)",
            signal.Signals(sig).name,
            self.state.in_flight,
            self.drain_timeout,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        deadline = time.monotonic() + self.drain_timeout
        while self.state.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.should_exit = True
