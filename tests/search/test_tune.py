"""``lmforge tune``: a small study on a tiny model -- trials as run folders, pruning, resumption by
running the command again, a best.yaml that trains, and a bad space refused before any trial."""

import csv
import json

import optuna
import pytest
import yaml

from conftest import TINY_MODEL, sentiment_rows, write_jsonl
from lmforge.search.study import open_study, prepare, run_trials


def _config(tmp_path, space: str, extra: str = "") -> str:
    write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0))
    write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(16, 1))
    path = tmp_path / "tune.yaml"
    path.write_text(
        f"task: classification\ndata: {{train: {tmp_path}/train.jsonl, validation: {tmp_path}/dev.jsonl}}\n"
        f"model: {TINY_MODEL}\n"
        "train: {epochs: 3, batch_size: 8, lr: 3.0e-3, warmup: 0, eval_every: 2, threads: 1}\n"
        f"output: {tmp_path}/run\n"
        f"tune: {{space: {space}{extra}}}\n",
        encoding="utf-8",
    )
    return str(path)


SPACE = "{train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}, train.batch_size: [8, 16]}"


@pytest.mark.slow
def test_a_study_runs_resumes_and_its_best_config_trains(tmp_path, run_cli):
    config = _config(tmp_path, SPACE, ", metric: loss, pruner: none")
    code, out, err = run_cli("tune", config, "--trials", "2", "--quiet")
    assert code == 0, err
    study = tmp_path / "run-tune"
    assert sorted(p.name for p in (study / "trials").iterdir()) == ["trial-000", "trial-001"]
    for trial in (study / "trials").iterdir():  # each trial is an ordinary run folder
        assert (trial / "lmforge.json").is_file() and (trial / "eval_results.json").is_file()

    # run again with more trials: the study continues where it was
    code, out, err = run_cli("tune", config, "--trials", "3", "--quiet")
    assert code == 0, err
    assert "2 trial(s) already ended" in out
    rows = list(csv.DictReader((study / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert all(r["state"] == "complete" for r in rows)
    # the third trial's values are drawn on, not the first trial's again
    assert (rows[2]["train.lr"], rows[2]["train.batch_size"]) != (rows[0]["train.lr"], rows[0]["train.batch_size"])
    # the study holds loss values: another metric is refused, before any trial
    code, _, err = run_cli("tune", config, "--trials", "4", "tune.metric=accuracy", "--quiet")
    assert code == 2 and "tune.metric: the study in" in err and "holds validation loss values" in err
    assert len(list((study / "trials").iterdir())) == 3
    values = {int(r["trial"]): float(r["value"]) for r in rows}
    # the value of each trial is its run's validation loss (the best checkpoint's)
    for n, value in values.items():
        results = json.loads((study / "trials" / f"trial-{n:03d}" / "eval_results.json").read_text())
        assert results["validation"]["loss"] == pytest.approx(value)
    best = min(values, key=values.get)
    assert f"best: trial {best}, validation loss" in out
    best_yaml = yaml.safe_load((study / "best.yaml").read_text())
    assert "tune" not in best_yaml
    assert best_yaml["train"]["lr"] == pytest.approx(float(rows[best]["train.lr"]))
    assert best_yaml["train"]["batch_size"] == int(rows[best]["train.batch_size"])
    assert (study / "report.html").read_text().count("<img") >= 2

    # best.yaml trains as it is
    code, out, err = run_cli("train", str(study / "best.yaml"), "train.epochs=1", "--quiet")
    assert code == 0, err
    assert (study / "best" / "eval_results.json").is_file()


@pytest.mark.slow
def test_a_trial_behind_the_others_is_pruned(tmp_path):
    config = _config(tmp_path, "{train.lr: [3.0e-3, 1.0e-7]}", ", metric: loss, pruner: median")
    search = prepare(config, [])
    search.folder.mkdir(parents=True)
    study = open_study(search)
    for lr in (3.0e-3, 3.0e-3, 1.0e-7):  # two good trials, then one that barely learns
        study.enqueue_trial({"train.lr": lr})
    study = run_trials(search, 3, None)
    states = [t.state for t in study.get_trials()]
    assert states == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    ]
    pruned = study.get_trials()[2]
    assert pruned.intermediate_values  # it reported its evaluations before the pruner stopped it
    run = search.folder / "trials" / "trial-002"
    assert (run / "metrics.jsonl").is_file() and not (run / "checkpoints").exists()


@pytest.mark.parametrize(
    "space, message",
    [
        ("{train.lrr: [1, 2]}", "tune.space.train.lrr: the value 1 does not fit (config: unknown key 'train.lrr'"),
        ("{train.lr: {low: 1.0e-3, high: 1.0e-5}}", "tune.space.train.lr: low (0.001) is above high (1e-05)"),
        ("{train.batch_size: []}", "tune.space.train.batch_size: the list of choices is empty"),
        ("{train.batch_size: [8, big]}", "tune.space.train.batch_size: the value 'big' does not fit"),
        ("{train.lr: {low: 0, high: 1.0e-3, log: true}}", "tune.space.train.lr: a log range needs low > 0"),
        ("{output: [a, b]}", "tune.space.output: this key is not searchable"),
        ("{train.lr: {low: 1.0e-3, high: 1.0e-3}}", "tune.space.train.lr: the range is empty"),
        ("{train.lr: 0.1}", "tune.space: train.lr: give a list of choices ([16, 32]) or a range ({low: "),
    ],
)
def test_a_bad_space_is_one_line_before_any_trial(tmp_path, run_cli, space, message):
    config = _config(tmp_path, space)
    code, out, err = run_cli("tune", config, "--trials", "2")
    assert code == 2
    assert err.startswith("lmforge: error: ") and message in err, err  # a type error: after the file's name
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run-tune").exists()


def test_grid_needs_lists_and_the_metric_must_exist(tmp_path, run_cli):
    config = _config(tmp_path, SPACE, ", sampler: grid")
    code, _, err = run_cli("tune", config)
    assert code == 2 and "tune.space.train.lr: the grid sampler needs a list" in err
    config = _config(tmp_path, SPACE, ", metric: bleu")
    code, _, err = run_cli("tune", config)
    assert code == 2 and "tune.metric: 'bleu' is not reported for task classification" in err
    assert not (tmp_path / "run-tune").exists()


@pytest.mark.slow
def test_two_jobs_run_exactly_the_trials_asked_with_their_own_draws_then_retrain(tmp_path, run_cli):
    config = _config(tmp_path, SPACE, ", metric: loss, pruner: none, sampler: random")
    code, out, err = run_cli("tune", config, "--trials", "3", "--jobs", "2", "--retrain", "--quiet")
    assert code == 0, err
    study = tmp_path / "run-tune"
    rows = list(csv.DictReader((study / "trials.csv").open()))
    assert len(rows) == 3 and all(r["state"] == "complete" for r in rows)  # not one more
    assert len({r["train.lr"] for r in rows}) == 3  # each worker draws its own values
    # the best config, trained again on train + validation and measured on what is left
    retrained = study / "retrained"
    kept = yaml.safe_load((retrained / "config.yaml").read_text())
    assert kept["data"]["validation"] is None and len(kept["data"]["train"]) == 2
    assert json.loads((retrained / "lmforge.json").read_text())["finished"] is True
    assert f"retrained on train + validation: {retrained}" in out


def test_an_ngram_model_is_tuned(tmp_path, run_cli):
    config = _config(tmp_path, "{model.C: {low: 0.1, high: 10.0, log: true}, model.classifier: [logreg, nbsvm]}")
    text = (tmp_path / "tune.yaml").read_text().replace(f"model: {TINY_MODEL}", "model: {family: ngram}")
    (tmp_path / "tune.yaml").write_text(text)
    code, out, err = run_cli("tune", config, "--trials", "3", "--quiet")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "run-tune" / "trials.csv").open()))
    assert len(rows) == 3 and all(r["state"] == "complete" for r in rows)
    assert {"model.C", "model.classifier"} <= set(rows[0])
    best = yaml.safe_load((tmp_path / "run-tune" / "best.yaml").read_text())
    assert best["model"]["family"] == "ngram" and best["model"]["classifier"] in ("logreg", "nbsvm")


def test_prompting_settings_are_tuned(tmp_path, run_cli):
    config = _config(tmp_path, "{prompt.shots: [0, 2], prompt.selection: [random, balanced]}", ", sampler: grid")
    text = (tmp_path / "tune.yaml").read_text()
    text = text.replace("tune: {", "prompt: {model: minilm, method: similarity}\ntune: {command: prompt, ")
    text = text.replace("task: classification\n", "task: classification\n")
    (tmp_path / "tune.yaml").write_text(text)
    code, out, err = run_cli("tune", config, "--trials", "4", "--quiet")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "run-tune" / "trials.csv").open()))
    assert sorted((r["prompt.shots"], r["prompt.selection"]) for r in rows) == [
        ("0", "balanced"),
        ("0", "random"),
        ("2", "balanced"),
        ("2", "random"),
    ]
    for n in range(4):
        meta = json.loads((tmp_path / "run-tune" / "trials" / f"trial-{n:03d}" / "lmforge.json").read_text())
        assert meta["model"]["family"] == "prompt"


def test_the_last_evaluation_of_a_trial_never_prunes_it(tmp_path):
    # One evaluation a trial (at its end): what it reports is its result, so even a trial far behind
    # the others completes instead of being pruned after all its training was done.
    config = _config(tmp_path, "{train.lr: [3.0e-3, 1.0e-7]}", ", metric: loss, pruner: median")
    search = prepare(config, ["train.epochs=1", "train.eval_every=epoch"])
    search.folder.mkdir(parents=True)
    study = open_study(search)
    for lr in (3.0e-3, 3.0e-3, 1.0e-7):
        study.enqueue_trial({"train.lr": lr})
    study = run_trials(search, 3, None)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 3


def test_a_stopped_trial_does_not_count_and_the_command_continues_the_study(tmp_path, run_cli, monkeypatch):
    from lmforge.search import study as study_module

    config = _config(tmp_path, SPACE, ", metric: loss, pruner: none")
    real_train, calls = study_module.train, []

    def train_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second trial loads its model
        return real_train(*args, **kwargs)

    monkeypatch.setattr(study_module, "train", train_then_ctrl_c)
    code, out, err = run_cli("tune", config, "--trials", "3", "--quiet")
    assert code == 130
    assert "stopped by SIGINT with 1 of 3 trial(s) ended" in err and "Continue with the same command" in err
    study = tmp_path / "run-tune"
    rows = list(csv.DictReader((study / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "stopped"]
    assert (study / "best.yaml").is_file()  # what the study had found is written

    monkeypatch.setattr(study_module, "train", real_train)
    code, out, err = run_cli("tune", config, "--trials", "3", "--quiet")
    assert code == 0, err
    assert "1 trial(s) already ended" in out
    rows = list(csv.DictReader((study / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "stopped", "complete", "complete"]


def test_a_run_stopped_by_a_signal_stops_the_study(tmp_path, monkeypatch):
    from lmforge.search import study as study_module

    config = _config(tmp_path, SPACE, ", metric: loss, pruner: none")
    search = prepare(config, [])
    search.folder.mkdir(parents=True)
    real_train = study_module.train

    def stopped_run(*args, **kwargs):
        outcome = real_train(*args, **kwargs)
        outcome.stopped_by = "SIGTERM"  # as when SIGTERM arrives during the loop: checkpointed, unfinished
        return outcome

    monkeypatch.setattr(study_module, "train", stopped_run)
    with pytest.raises(study_module.StudyStopped):
        run_trials(search, 2, None)
    study = open_study(search)
    assert study_module.ended(study) == 0
    assert study.get_trials()[0].user_attrs["stopped"] == "SIGTERM"


@pytest.mark.parametrize("where", ["loading", "between"])
def test_sigterm_outside_a_training_loop_stops_the_study_cleanly(tmp_path, run_cli, monkeypatch, where):
    """A SIGTERM while a trial loads or between trials (no training loop listening) ends the study as
    Ctrl-C does: the report written, exit 130, and the study continues with the same command."""
    import os
    import signal

    from lmforge.search import study as study_module

    config = _config(tmp_path, SPACE, ", metric: loss, pruner: none")
    real_train, real_enough, calls = study_module.train, study_module._enough, []

    def train_then_term(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # before the run's own handler is installed
        return real_train(*args, **kwargs)

    def enough_then_term(trials):
        callback = real_enough(trials)

        def after_trial(study, trial):
            callback(study, trial)
            os.kill(os.getpid(), signal.SIGTERM)  # in Optuna's work between two trials

        return after_trial

    monkeypatch.setattr(study_module, "train", train_then_term)
    if where == "between":
        monkeypatch.setattr(study_module, "_enough", enough_then_term)
    code, out, err = run_cli("tune", config, "--trials", "3", "--quiet")
    assert code == 130, err
    assert "stopped by SIGTERM with 1 of 3 trial(s) ended" in err
    assert "no trial completed" not in err
    study = tmp_path / "run-tune"
    rows = list(csv.DictReader((study / "trials.csv").open()))
    assert [r["state"] for r in rows] == (["complete", "stopped"] if where == "loading" else ["complete"])
    assert (study / "best.yaml").is_file() and "trial 0" in out
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is given back


def test_a_stop_inside_optunas_bookkeeping_still_stops_the_study(tmp_path, monkeypatch):
    """Optuna turns a KeyboardInterrupt raised while it records a trial into another error; the study
    still stops as for any stop request, not with a traceback."""
    import optuna.study._optimize as optimize

    from lmforge.search import study as study_module

    search = prepare(_config(tmp_path, SPACE, ", metric: loss, pruner: none"), [])
    search.folder.mkdir(parents=True)
    real_tell, calls = optimize._tell_with_warning, []

    def tell_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise study_module.Terminated()  # SIGTERM while the second trial's result is written
        return real_tell(*args, **kwargs)

    monkeypatch.setattr(optimize, "_tell_with_warning", tell_interrupted)
    with pytest.raises(study_module.StudyStopped) as stopped:
        run_trials(search, 3, None)
    assert stopped.value.signal == "SIGTERM"
