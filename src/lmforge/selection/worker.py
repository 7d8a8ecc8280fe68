"""One step of ``lmforge compare`` in a process of its own, so that its peak memory is its own and
a failing candidate cannot take the others down: ``python -m lmforge.selection.worker STEP.json``.

STEP.json: ``{"mode": "train" | "prompt" | "measure_run" | "measure_prompt", "config": PATH,
"overrides": [...], "run": DIR, "texts": [...], "result": PATH}``. The result file gets the
step's outcome plus ``peak_rss_mb`` and ``seconds``, or ``error``.
"""

import json
import logging
import resource
import sys
import time
from pathlib import Path

from lmforge.config import load_config
from lmforge.errors import LmforgeError
from lmforge.prompting.prompt_run import run_prompt
from lmforge.runtime import set_threads
from lmforge.selection.measure import measure_prompt, measure_run
from lmforge.training.recipe import train


def run_step(step: dict) -> dict:

    mode = step["mode"]
    if mode == "measure_run":
        set_threads(step.get("threads"))
        return measure_run(Path(step["run"]), step["texts"], step.get("device", "auto"))
    config = load_config(step["config"], step["overrides"])
    if mode == "train":
        outcome = train(config, quiet=True)
        if outcome.stopped_by:
            raise RuntimeError(f"stopped by {outcome.stopped_by}")
        return {}
    if mode == "prompt":
        run_prompt(config, quiet=True)
        return {}
    if mode == "measure_prompt":
        set_threads(config.train.threads)
        return measure_prompt(config, step["texts"])
    raise ValueError(f"unknown step mode {mode!r}")


def main(argv: list[str]) -> int:

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    step = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    started = time.perf_counter()
    code = 0
    try:
        result = run_step(step)
    except LmforgeError as exc:
        result, code = {"error": str(exc)}, 1
    except Exception as exc:  # noqa: BLE001 -- reported to compare, with the traceback in the log
        import traceback

        traceback.print_exc()
        result, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(step["result"]).write_text(json.dumps(result), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
