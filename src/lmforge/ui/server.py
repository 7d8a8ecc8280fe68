"""Run the dashboard under uvicorn. Ctrl-C (or SIGTERM) stops it: running jobs get SIGINT (each saves
a checkpoint, resumable) and the playground's model closes."""

from lmforge._optional import require
from lmforge.ui.settings import UiSettings

# The serve extra, named before anything imports it.
uvicorn = require("uvicorn", "lmforge[serve]", "lmforge ui")
require("fastapi", "lmforge[serve]", "lmforge ui")

from lmforge.serving.connections import GuardedH11  # noqa: E402
from lmforge.ui.app import create_ui_app  # noqa: E402


def run_ui(settings: UiSettings) -> int:
    settings.check()
    app = create_ui_app(settings)
    print(f"lmforge ui: http://{settings.host}:{settings.port}/  (runs: {settings.runs}; Ctrl-C stops)", flush=True)
    # The server's connection limits (serving/connections.py) at their defaults: slow clients cannot hold it.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        http=GuardedH11,
        timeout_keep_alive=5,
        limit_concurrency=256,
    )
    return 0
