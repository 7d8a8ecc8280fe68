"""A study's ``report.html``: the summary, the trials table and Optuna's plots (optimization
history, parameter importances, parallel coordinates), drawn with Optuna's matplotlib backend and
embedded, so the file needs nothing else to display."""

import html
import json
import logging
import warnings
from pathlib import Path

import optuna

from lmforge.tracking.report import _image, _page, _pyplot, _table
from lmforge.tracking.run_folder import write_atomic

log = logging.getLogger("lmforge")


def write_study_report(path: Path, study: optuna.Study, rows: list[dict], summary: dict, keys: list[str]) -> None:
    body = []
    if summary.get("best_params"):
        params = [[k, v] for k, v in summary["best_params"].items()]
        body.append("<h2>Best trial's values</h2>" + _table(["parameter", "value"], params))
    body.append(f"<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=1, default=str))}</pre>")
    if rows:
        header = list(dict.fromkeys(k for row in rows for k in row))
        body.append("<h2>Trials</h2>" + _table(header, [[row.get(k, "") for k in header] for row in rows]))
    body += [_plot(title, draw, study, keys) for title, draw in PLOTS]
    trials = summary.get("trials") or {}
    headline = [
        (f"best {summary.get('metric')}", summary.get("best_value")),
        ("best trial", summary.get("best_trial")),
        ("direction", summary.get("direction")),
        ("complete trials", trials.get("complete")),
        ("pruned", trials.get("pruned")),
        ("failed", trials.get("fail")),
    ]
    write_atomic(path, _page(f"lmforge tune: {summary['study']}", "\n".join(body), headline))


def _history(study, keys):
    return optuna.visualization.matplotlib.plot_optimization_history(study)


def _importances(study, keys):
    return optuna.visualization.matplotlib.plot_param_importances(study)


def _parallel(study, keys):
    return optuna.visualization.matplotlib.plot_parallel_coordinate(study, params=keys)


PLOTS = [
    ("Optimization history", _history),
    ("Parameter importances", _importances),
    ("Parallel coordinates", _parallel),
]


def _plot(title: str, draw, study: optuna.Study, keys: list[str]) -> str:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"<h2>{title}</h2><p>needs two complete trials</p>"
    _pyplot()  # the Agg backend: no display needed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = draw(study, keys)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(8, 4.5)
        return f"<h2>{title}</h2>" + _image(figure)
    except (ValueError, RuntimeError) as exc:  # e.g. importances when a parameter never varied
        return f"<h2>{title}</h2><p>not drawn: {html.escape(str(exc).splitlines()[0])}</p>"
