"""Data parallel on CPU (gloo): two processes reproduce one process with the same global batch; a
checkpoint taken with two processes resumes in one; a failure in one process stops both and is
reported with that process's message."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import sentiment_rows, write_jsonl

HERE = Path(__file__).parent
TINY = "{family: transformer, arch: bert, layers: 2, hidden: 32, heads: 2, vocab_size: 200}"


def _job(tmp_path: Path, model: str = TINY) -> Path:
    write_jsonl(tmp_path / "train.jsonl", sentiment_rows(64, 0))  # 4 global batches of 16
    write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(20, 1))
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: classification\ndata: {{train: {tmp_path}/train.jsonl, validation: {tmp_path}/dev.jsonl}}\n"
        f"model: {model}\n"
        # dropout off: each process draws its own masks, so only a dropout-free run can match exactly;
        # precision fp32: auto decides by timing, which a loaded machine can tip differently per run
        "train: {epochs: 2, lr: 3.0e-3, warmup: 0, dropout: 0.0, threads: 1, log_every: 1, eval_every: 2, "
        "precision: fp32}\n",
        encoding="utf-8",
    )
    return config


def _lmforge(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lmforge", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _rows(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def _weights(folder: Path) -> dict:
    return load_file(next(folder.glob("*.safetensors")))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
@pytest.mark.parametrize(("rows", "batch", "accum"), [("never", 8, 1), ("always", 4, 2)])
def test_two_processes_reproduce_one(tmp_path, rows, batch, accum):
    # always: the word embeddings are left out of DDP and all-reduced over the rows each step used,
    # here over two accumulated micro batches a process
    config = _job(tmp_path)
    config.write_text(config.read_text() + f"distributed: {{embedding_rows: {rows}}}\n")
    # one process accumulating the same micro batches: batches of 2 x batch
    one = _lmforge(
        "train",
        str(config),
        f"output={tmp_path}/one",
        f"train.batch_size={2 * batch}",
        f"train.grad_accum={accum}",
        "--quiet",
    )
    assert one.returncode == 0, one.stderr
    two = _torchrun(
        "train", str(config), f"output={tmp_path}/two", f"train.batch_size={batch}", f"train.grad_accum={accum}"
    )
    assert two.returncode == 0, two.stderr
    # one report, from the main process only
    assert two.stdout.count("run folder:") == 1
    steps = "1 accumulation step" if accum == 1 else f"{accum} accumulation steps"
    assert f"global batch 16 = {batch} per process x 2 processes x {steps}" in two.stderr
    assert ("all-reduced over the rows each step used" in two.stderr) == (rows == "always")

    losses = [[r["loss"] for r in _rows(tmp_path / run, "train")] for run in ("one", "two")]
    assert len(losses[0]) == len(losses[1]) == 8
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    evals = [[(r["step"], r["loss"], r["accuracy"]) for r in _rows(tmp_path / run, "eval")] for run in ("one", "two")]
    assert [e[:1] for e in evals[0]] == [e[:1] for e in evals[1]]
    assert [e[1:] for e in evals[0]] == pytest.approx([e[1:] for e in evals[1]], abs=1e-5)
    assert _max_diff(_weights(tmp_path / "one" / "model"), _weights(tmp_path / "two" / "model")) < 1e-5
    finals = [json.loads((tmp_path / run / "eval_results.json").read_text())["validation"] for run in ("one", "two")]
    assert finals[0]["accuracy"] == finals[1]["accuracy"]
    assert finals[0]["loss"] == pytest.approx(finals[1]["loss"], abs=1e-5)
    predictions = (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 20  # every validation row once


@pytest.mark.slow
def test_gradients_compressed_to_fp16_train_as_exact_ones_do_within_rounding(tmp_path):
    config = _job(tmp_path)
    config.write_text(config.read_text() + "distributed: {gradient_compression: fp16}\n")
    one = _lmforge("train", str(config), f"output={tmp_path}/one", "train.batch_size=16", "--quiet")
    assert one.returncode == 0, one.stderr
    two = _torchrun("train", str(config), f"output={tmp_path}/two", "train.batch_size=8")
    assert two.returncode == 0, two.stderr
    assert "gradients all-reduced in fp16" in two.stderr
    losses = [[r["loss"] for r in _rows(tmp_path / run, "train")] for run in ("one", "two")]
    assert len(losses[0]) == len(losses[1]) == 8
    # fp16 keeps 11 bits: the gradients differ in their fourth digit, the losses of 8 steps hardly
    assert losses[0] == pytest.approx(losses[1], rel=1e-2)
    assert losses[0] != pytest.approx(losses[1], abs=1e-7)  # the hook ran: not bit-exact
    # (Adam divides by the gradient's size: a rounded tiny gradient moves a weight as far as an exact one)
    finals = [json.loads((tmp_path / run / "eval_results.json").read_text())["validation"] for run in ("one", "two")]
    assert finals[0]["loss"] == pytest.approx(finals[1]["loss"], rel=1e-2)


def _token_job(tmp_path: Path, task: str) -> Path:
    """A token-level task whose rows differ in length: the global batch's mean is over its tokens,
    however they fall between the processes."""
    sys.path.insert(0, str(HERE))
    from test_ner_end_to_end import ner_sentences, write_conll

    if task == "causal_lm":
        rows = [{"text": " ".join(r["text"] for r in sentiment_rows(1 + i % 4, i))} for i in range(32)]
        write_jsonl(tmp_path / "train.jsonl", rows)
        write_jsonl(tmp_path / "dev.jsonl", rows[:8])
        files, model = (
            ("train.jsonl", "dev.jsonl"),
            "{family: transformer, arch: llama, layers: 2, hidden: 32, heads: 2, vocab_size: 200}",
        )
        extra = "tuning: {method: lora, r: 4, dropout: 0.0}\n"
    else:
        write_conll(tmp_path / "train.conll", ner_sentences(32, 0))
        write_conll(tmp_path / "dev.conll", ner_sentences(8, 1))
        files, model, extra = ("train.conll", "dev.conll"), TINY, ""
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: {task}\ndata: {{train: {tmp_path / files[0]}, validation: {tmp_path / files[1]}}}\n"
        f"model: {model}\n{extra}"
        # precision fp32: auto decides by timing, which a loaded machine can tip differently per run
        "train: {epochs: 1, lr: 3.0e-3, warmup: 0, dropout: 0.0, threads: 1, log_every: 1, group_by_length: false, "
        "precision: fp32}\n",
        encoding="utf-8",
    )
    return config


@pytest.mark.slow
@pytest.mark.parametrize("task", ["causal_lm", "token_classification"])
def test_token_level_tasks_in_two_processes_reproduce_one(tmp_path, task):
    config = _token_job(tmp_path, task)
    one = _lmforge("train", str(config), f"output={tmp_path}/one", "train.batch_size=8", "--quiet")
    assert one.returncode == 0, one.stderr
    two = _torchrun("train", str(config), f"output={tmp_path}/two", "train.batch_size=4")
    assert two.returncode == 0, two.stderr
    losses = [[r["loss"] for r in _rows(tmp_path / run, "train")] for run in ("one", "two")]
    assert len(losses[0]) == len(losses[1]) >= 3
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert _max_diff(_weights(tmp_path / "one" / "model"), _weights(tmp_path / "two" / "model")) < 1e-5
    # and accumulating two micro batches of 4 in one process takes the same steps
    acc = _lmforge(
        "train", str(config), f"output={tmp_path}/acc", "train.batch_size=4", "train.grad_accum=2", "--quiet"
    )
    assert acc.returncode == 0, acc.stderr
    assert [r["loss"] for r in _rows(tmp_path / "acc", "train")] == pytest.approx(losses[0], abs=1e-5)


@pytest.mark.slow
def test_checkpoint_of_two_processes_resumes_in_one(tmp_path):
    config = _job(tmp_path)
    whole = _lmforge(
        "train", str(config), f"output={tmp_path}/whole", "train.batch_size=16", "train.save_every=3", "--quiet"
    )
    assert whole.returncode == 0, whole.stderr
    # two processes checkpoint at step 3 of 8; the run is cut back to that checkpoint ...
    first = _lmforge(
        "train",
        str(config),
        f"output={tmp_path}/split",
        "train.batch_size=8",
        "train.save_every=3",
        "train.keep_checkpoints=10",
        "train.keep_optimizer=true",  # the run ends; its checkpoints must still continue it exactly
        "--processes",
        "2",
    )
    assert first.returncode == 0, first.stderr
    checkpoints = tmp_path / "split" / "checkpoints"
    for later in [c for c in checkpoints.iterdir() if c.name != "step-3"]:
        shutil.rmtree(later)
    # ... a wrong per-process batch for one process is refused, naming the fix ...
    wrong = _lmforge("train", str(config), f"output={tmp_path}/split", "train.batch_size=8", "resume=true")
    assert wrong.returncode != 0
    assert "train.batch_size x processes is 16" in wrong.stderr
    # ... and one process with the same global batch finishes the run where one process would have.
    second = _lmforge(
        "train",
        str(config),
        f"output={tmp_path}/split",
        "train.batch_size=16",
        "train.save_every=3",
        "train.keep_checkpoints=10",
        "resume=true",
        "--quiet",
    )
    assert second.returncode == 0, second.stderr
    assert _max_diff(_weights(tmp_path / "whole" / "model"), _weights(tmp_path / "split" / "model")) < 1e-5


@pytest.mark.slow
def test_a_failure_in_one_process_stops_both(tmp_path):
    config = _job(tmp_path)
    env = {"PYTHONPATH": os.pathsep.join([str(HERE / "fail_rank"), os.environ.get("PYTHONPATH", "")])}
    done = _lmforge(
        "train",
        str(config),
        f"output={tmp_path}/run",
        "train.batch_size=8",
        "--processes",
        "2",
        "--quiet",
        env={**env, "LMFORGE_TEST_FAIL_STEP": "3"},
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last == "lmforge: error: (process 1 of 2) rank 1 fails on purpose at step 3"
    assert done.stderr.count("fails on purpose") == 1  # said once, by the launching process
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "eval_results.json").exists()  # the run did not finish


@pytest.mark.slow
def test_a_one_pass_family_refuses_several_processes(tmp_path):
    config = _job(tmp_path)
    done = _lmforge(
        "train", str(config), f"output={tmp_path}/run", "model={family: ngram}", "--processes", "2", "--quiet"
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "learns in one pass in one process; train it without --processes" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "lmforge.json").exists()


def test_a_bad_process_count_is_one_line(tmp_path, run_cli):
    config = _job(tmp_path)
    code, _, err = run_cli("train", str(config), f"output={tmp_path}/run", "--processes", "0")
    assert code == 2
    assert err.strip() == "lmforge: error: --processes: 0; give 1 or more"
    assert not (tmp_path / "run").exists()


def test_setfit_is_refused_before_any_process_starts_or_writes(tmp_path):
    config = _job(tmp_path)
    for launcher in (["--processes", "2"], None):
        args = ["train", str(config), f"output={tmp_path}/run", "tuning.method=setfit", "--quiet"]
        done = _lmforge(*args, *launcher) if launcher else _torchrun(*args)
        assert done.returncode != 0
        assert "lmforge: error: tuning.method=setfit trains in one process" in done.stderr
        assert not (tmp_path / "run").exists()


def test_no_cuda_here_is_one_line(tmp_path, run_cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = _job(tmp_path)
    code, _, err = run_cli("train", str(config), f"output={tmp_path}/run", "device=cuda")
    assert code == 2
    assert "device: 'cuda' asks for CUDA" in err
    assert not (tmp_path / "run").exists()


def test_the_launching_process_starts_the_others_without_the_training_stack(tmp_path):
    config = _job(tmp_path)
    script = (
        "import sys, lmforge.training.launcher as launcher\n"
        "launcher.launch = lambda n, argv: print(n, argv, 'lmforge.training.recipe' in sys.modules, "
        "'accelerate' in sys.modules, 'transformers' in sys.modules) or 0\n"
        "from lmforge.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )

    def launching(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)

    done = launching("train", str(config), "--processes", "2", "--quiet", "train.lr=0.01")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"2 ['train', '{config}', 'train.lr=0.01', '--quiet'] False False False"
    # a bad config still fails once, in the launching process, before any other starts
    bad = launching("train", str(config), "--processes=2", "train.lerning_rate=0.01")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1].startswith("lmforge: error: ")
    assert "train.lerning_rate" in bad.stderr


@pytest.mark.slow
def test_an_error_in_every_process_is_said_once(tmp_path):
    config = _job(tmp_path)
    with (tmp_path / "train.jsonl").open("a") as rows:
        rows.write("{broken\n")
    done = _lmforge("train", str(config), f"output={tmp_path}/run", "--processes", "2", "--quiet")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"lmforge: error: (process 0 of 2) {tmp_path}/train.jsonl:65: malformed JSON (Expecting property name "
        "enclosed in double quotes at column 2)"
    ]


@pytest.mark.slow
def test_ctrl_c_stops_every_process_with_a_checkpoint_and_the_command_to_continue(tmp_path):
    config = _job(tmp_path)
    command = [sys.executable, "-m", "lmforge", "train", str(config), f"output={tmp_path}/run"]
    command += ["train.epochs=100000", "train.save_every=5", "--processes", "2", "--quiet"]
    started = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "run" / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(started.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
    _, err = started.communicate(timeout=120)
    assert started.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "lmforge: interrupted"
    assert "death signal" not in err  # torch's launcher says nothing of its own
    assert "--processes 2 resume=true" in err
