"""train.precision (auto measures, explicit values checked against the device), gradient
checkpointing (same losses, refused where a family has none) and the peak memory in the summary."""

import json

import pytest
import torch

from conftest import tiny_overrides
from lmforge.config import JobConfig
from lmforge.errors import ConfigError
from lmforge.training.precision import MIN_GAIN, choose_precision, decide, decided_early, native_candidate

CPU = torch.device("cpu")


def test_auto_keeps_a_reduced_precision_only_when_it_is_faster():
    assert decide("bf16", fp32_s=0.010, reduced_s=0.005).used == "bf16"
    slower = decide("bf16", fp32_s=0.010, reduced_s=0.087)  # the 8.7x slowdown seen on an H200
    assert slower.used == "fp32" and "0.11x" in slower.reason
    assert decide("fp16", fp32_s=0.010, reduced_s=0.010 / (MIN_GAIN - 0.05)).used == "fp32"
    assert decide("bf16", fp32_s=0.010, reduced_s=0.001).timings_ms == {"fp32": 10.0, "bf16": 1.0}


def test_one_pass_each_decides_only_long_passes_far_from_the_threshold():
    assert decided_early(fp32_s=6.0, reduced_s=3.5)  # 1.7x: bf16, without more passes
    assert decided_early(fp32_s=1.0, reduced_s=8.7)  # 0.11x: fp32
    assert not decided_early(fp32_s=6.0, reduced_s=6.0 / MIN_GAIN)  # at the threshold: measure more
    assert decided_early(fp32_s=6.0, reduced_s=6.0 / 1.25) and not decided_early(fp32_s=6.0, reduced_s=6.0 / 1.15)
    assert not decided_early(fp32_s=0.06, reduced_s=0.02)  # short passes: timer noise, measure more


def test_auto_times_the_first_rows_up_to_a_token_budget():
    from lmforge.training.job import MEASURED_TOKENS, measured_rows

    long = [{"input_ids": [1] * MEASURED_TOKENS} for _ in range(2)]
    assert measured_rows(long) == long[:1]  # SFT: one packed row of 512 tokens, not the batch
    short = [{"input_ids": [1] * 13} for _ in range(32)]
    assert measured_rows(short) == short  # an encoder batch of short texts: all of it
    assert measured_rows([{"input_ids": [1] * 4000}]) == [{"input_ids": [1] * 4000}]  # always one row
    assert len(measured_rows([{"input_ids": [1] * 100} for _ in range(8)])) == 5


def _model_and_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 2))
    x, y = torch.randn(8, 16), torch.tensor([0, 1] * 4)
    return model, lambda m: torch.nn.functional.cross_entropy(m(x).float(), y)


def test_measuring_leaves_weights_gradients_and_random_state_as_they_were():
    model, loss_of_batch = _model_and_loss()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    choice = choose_precision("auto", CPU, model, loss_of_batch, candidate="bf16")
    assert choice.used in ("fp32", "bf16") and set(choice.timings_ms) == {"fp32", "bf16"}
    assert choice.reason.startswith("auto: ")
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.rand(3), expected_draw)  # dropout's draws were given back


def test_explicit_precisions_are_checked_against_the_device(monkeypatch):
    model, loss_of_batch = _model_and_loss()
    with pytest.raises(ConfigError, match="train.precision: fp16 .* CUDA only"):
        choose_precision("fp16", CPU, model, loss_of_batch)
    assert choose_precision("fp32", CPU, model, loss_of_batch).used == "fp32"
    monkeypatch.setattr("lmforge.inference.precision.cpu_has_native_bf16", lambda: False)
    assert native_candidate(CPU)[0] is None
    assert choose_precision("auto", CPU, model, loss_of_batch).used == "fp32"  # nothing to measure
    assert choose_precision("bf16", CPU, model, loss_of_batch).used == "bf16"  # asked for: runs, warned


def test_the_old_mixed_precision_key_is_read():
    base = {"task": "classification", "data": {"train": "t.jsonl"}}
    assert JobConfig.model_validate({**base, "train": {"mixed_precision": "no"}}).train.precision == "fp32"
    assert JobConfig.model_validate({**base, "train": {"mixed_precision": "bf16"}}).train.precision == "bf16"
    with pytest.raises(ValueError, match="disagree"):
        JobConfig.model_validate({**base, "train": {"mixed_precision": "bf16", "precision": "fp32"}})


@pytest.fixture
def job(tiny_data):
    path = tiny_data["dir"] / "job.yaml"
    path.write_text("task: classification\n", encoding="utf-8")
    return str(path)


def _rows(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_gradient_checkpointing_gives_the_same_losses(tiny_data, job, tmp_path, run_cli):
    runs = {}
    for name, extra in (("plain", ()), ("checkpointed", ("train.gradient_checkpointing=true",))):
        out = tmp_path / name
        code, _, err = run_cli(
            "train",
            "--quiet",
            job,
            *tiny_overrides(tiny_data, out, "train.log_every=1", "train.epochs=1", *extra),
        )
        assert code == 0, err
        runs[name] = [r["loss"] for r in _rows(out, "train")]
    assert len(runs["plain"]) == 6
    # The first loss is the same forward pass, to float32's last bits: a checkpointed block can run
    # its kernels on tensors at another alignment, which sum in another order on some CPUs (seen on a
    # fresh-clone CI run: 6.3e-6 apart at step 1, on a loss of 0.69). Later ones part further (seen
    # on CI: 1.2e-4 after five steps at lr 3e-3, from a 1e-5 start).
    assert runs["checkpointed"][0] == pytest.approx(runs["plain"][0], abs=2e-5)
    assert runs["checkpointed"] == pytest.approx(runs["plain"], abs=1e-3)
    summary = json.loads((tmp_path / "plain" / "lmforge.json").read_text())["training"]
    assert summary["precision"]["used"] == "fp32" and summary["precision"]["reason"]
    assert summary["peak_rss_mb"] > 50  # torch alone takes more


def test_fp16_on_cpu_and_checkpointing_an_lstm_are_one_line_errors(tiny_data, job, tmp_path, run_cli):
    code, _, err = run_cli("train", job, *tiny_overrides(tiny_data, tmp_path / "a", "train.precision=fp16"))
    assert code != 0 and "train.precision: fp16" in err and "Traceback" not in err
    code, _, err = run_cli(
        "train",
        job,
        *tiny_overrides(tiny_data, tmp_path / "b", "train.gradient_checkpointing=true"),
        "model={family: lstm, layers: 1, hidden: 16, embedding: 16}",
    )
    assert code != 0 and "train.gradient_checkpointing: the lstm family" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_checkpointing_is_switched_on_inside_a_wrapped_transformer():
    from transformers import BertConfig, BertForSequenceClassification

    from lmforge.training.memory import enable_gradient_checkpointing

    bert = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    )
    wrapper = torch.nn.ModuleDict({"inner": bert})  # as a task's head or an adapter wraps it
    assert not getattr(bert, "is_activation_checkpointing", bert.is_gradient_checkpointing)
    enable_gradient_checkpointing(wrapper, "transformer")
    assert getattr(bert, "is_activation_checkpointing", bert.is_gradient_checkpointing)


def test_a_resumed_auto_run_computes_in_what_it_chose_at_its_start(tmp_path):
    from lmforge.tracking.run_folder import RunFolder
    from lmforge.tracking.run_record import RunRecord
    from lmforge.training.job import _resumed_precision

    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    auto = JobConfig.model_validate({"task": "classification", "data": {"train": "t.jsonl"}, "output": str(run.path)})
    assert _resumed_precision(run, auto) is None  # no record yet: measure
    chosen = {"used": "bf16", "reason": "auto: bf16 measured 1.3x faster"}
    run.write_record(RunRecord(task="classification", head="sequence", training={"precision": chosen}))
    resumed = _resumed_precision(run, auto)
    assert resumed is not None and resumed.used == "bf16" and resumed.reason.startswith("resumed:")
    explicit = JobConfig.model_validate(
        {
            "task": "classification",
            "data": {"train": "t.jsonl"},
            "output": str(run.path),
            "train": {"precision": "fp32"},
        }
    )
    assert _resumed_precision(run, explicit) is None  # an explicit precision is what it says


def test_a_measured_auto_choice_is_reused_by_the_next_identical_run(tiny_data, job, tmp_path, run_cli, monkeypatch):
    """The second of two runs that differ in nothing the speed depends on takes the first one's
    measured choice from the cache (and says so); another batch shape or model measures anew."""
    import lmforge.training.job as job_module
    from lmforge.training.precision import CACHE_DAYS, DecisionCache, PrecisionChoice

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(job_module, "native_candidate", lambda device: ("bf16", "test: a native candidate"))
    measured = []
    real = job_module.choose_precision

    def counting(*args, **kwargs):
        measured.append(1)
        return real(*args, candidate="bf16", **kwargs) if args[0] == "auto" else real(*args, **kwargs)

    monkeypatch.setattr(job_module, "choose_precision", counting)
    reasons = []
    for name, extra in (("first", ()), ("second", ()), ("wider", ("train.batch_size=4",))):
        out = tmp_path / name
        code, _, err = run_cli("train", "--quiet", job, *tiny_overrides(tiny_data, out, "train.precision=auto", *extra))
        assert code == 0, err
        reasons.append(json.loads((out / "lmforge.json").read_text())["training"]["precision"])
    assert len(measured) == 2  # the first and the wider run measured, the second reused
    assert reasons[1]["used"] == reasons[0]["used"] and "reused" in reasons[1]["reason"]
    assert reasons[1]["step_ms"] == reasons[0]["step_ms"] and "reused" not in reasons[2]["reason"]

    model, _ = _model_and_loss()
    batch = {"input_ids": torch.zeros(2, 5, dtype=torch.long)}
    cache = DecisionCache(tmp_path / "unit", CPU, model, batch, "classification")
    assert cache.get() is None
    cache.put(PrecisionChoice("bf16", "auto: measured 1.3x", {"fp32": 2.0, "bf16": 1.5}))
    assert cache.get().used == "bf16"
    assert (
        DecisionCache(tmp_path / "unit", CPU, model, {"input_ids": torch.zeros(2, 6)}, "classification").get() is None
    )
    saved = json.loads(cache.path.read_text())
    cache.path.write_text(json.dumps({**saved, "measured_at": saved["measured_at"] - 86400 * (CACHE_DAYS + 1)}))
    assert cache.get() is None  # too old: measured again
    cache.path.write_text("{not json")
    assert cache.get() is None
