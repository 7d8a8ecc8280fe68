"""``lmforge compare`` end to end: plan -> execute -> table, recommendation and report."""

import logging
import shlex
import sys
from datetime import datetime, timezone

from lmforge.config import load_config
from lmforge.config.schema import TransformerSpec
from lmforge.errors import ConfigError
from lmforge.models.family import FAMILIES
from lmforge.selection.compare import MIN_STEPS, execute, parse_budget, parse_shots, plan
from lmforge.selection.results import curve_markdown, markdown, recommend, table_rows, write_outputs

log = logging.getLogger("lmforge")
METRICS = {"classification": ("macro_f1", "accuracy"), "token_classification": ("f1", "precision", "recall")}


def default_models(config, curve: bool) -> str:
    """Without ``--models``: the small families beside the config's own model (with ``--shots``:
    the config's model fine-tuned, and with SetFit where it is a transformer classifier, and
    zero/few-shot prompting)."""

    own = config.model if isinstance(config.model, str) else None
    if curve:
        spec = config.model
        transformer = own is not None or (isinstance(spec, TransformerSpec) and spec.arch in (None, "bert"))
        setfit = config.task == "classification" and transformer and config.tuning.method != "setfit"
        return ",".join([own or "config", *([f"{own or 'config'}:setfit"] if setfit else []), "prompt"])
    families = [f for f in ("ngram", "lstm") if f in FAMILIES]
    return ",".join(families + [own or "config"])


def run_compare(
    config_path: str,
    overrides: list[str],
    models: str | None = None,
    shots: str | None = None,
    budget: str | None = None,
    output: str | None = None,
    limit: int | None = None,
    max_shots: int = 32,
    metric: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    min_steps: int = MIN_STEPS,
) -> dict:

    labelled = parse_shots(shots)
    limits = parse_budget(budget)
    base = load_config(config_path, overrides)
    allowed = METRICS.get(base.task)
    if allowed is None:
        raise ConfigError(f"compare: task '{base.task}' is not supported yet (classification, token_classification)")
    metric = metric or allowed[0]
    if metric not in allowed:
        raise ConfigError(f"compare --metric: '{metric}' is not reported for {base.task} ({', '.join(allowed)})")
    models = models or default_models(base, labelled is not None)
    folder, steps, _ = plan(config_path, overrides, models, labelled, output, limit, max_shots, overwrite, min_steps)
    if not quiet:
        log.info("compare: %d run(s) into %s: %s", len(steps), folder, ", ".join(s.label for s in steps))
    execute(folder, steps, config_path, quiet)
    rows, evaluated = table_rows(steps, base.task, metric)
    summary = {
        "config": config_path,
        "overrides": overrides,
        "models": models,
        "shots": labelled,
        "metric": metric,
        "evaluated": evaluated,
        "limit": limit,
        "command": "lmforge " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recommendation": recommend(rows, limits),
    }
    write_outputs(folder, rows, summary, metric, labelled)
    summary["folder"] = str(folder)
    summary["rows"] = rows
    summary["table"] = markdown(rows, metric, labelled is not None)
    if labelled:
        summary["curve"] = curve_markdown(rows, metric, labelled)
    return summary
