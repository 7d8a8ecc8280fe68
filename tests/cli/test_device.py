"""One device setting: ``--device auto|cpu|cuda|cuda:N`` on every command that runs a model, resolved
by ``lmforge.runtime.resolve_device`` alone. ``--device cpu`` runs on the CPU even where torch sees a
GPU; a value that is not a device, or CUDA on a machine without it, is one line naming ``device``."""

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL, sentiment_rows, write_jsonl
from lmforge.cli.main import main
from lmforge.errors import ConfigError
from lmforge.runtime import resolve_device

TINY_LLAMA = "{family: transformer, arch: llama, layers: 1, hidden: 16, heads: 2, vocab_size: 200}"
COMMON = ["train.epochs=1", "train.batch_size=8", "train.warmup=0", "train.lr=5e-3"]


def train(config: Path, task: str, *overrides: str) -> None:
    config.write_text(f"task: {task}\n")
    assert main(["train", "--quiet", str(config), *overrides, *COMMON]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny sentiment classifier (BERT, 2 layers) and a tiny chat model (Llama, 1 layer): a few
    seconds each."""
    root = tmp_path_factory.mktemp("device")
    dev = write_jsonl(root / "dev.jsonl", sentiment_rows(16, 1))
    train(
        root / "cls.yaml",
        "classification",
        f"data.train={write_jsonl(root / 'train.jsonl', sentiment_rows(48, 0))}",
        f"data.validation={dev}",
        f"model={TINY_MODEL}",
        f"output={root / 'sentiment'}",
    )
    rows = [{"instruction": f"what is {a} plus {b}", "output": f"{a + b}"} for a in range(4) for b in range(4)]
    train(
        root / "sft.yaml",
        "causal_lm",
        f"data.train={write_jsonl(root / 'sft.jsonl', rows)}",
        "data.split=0.25",
        "data.max_length=48",
        f"model={TINY_LLAMA}",
        f"output={root / 'chat'}",
    )
    return {"sentiment": root / "sentiment", "chat": root / "chat", "dev": dev, "config": root / "cls.yaml"}


@pytest.fixture
def a_gpu_in_name_only(monkeypatch):
    """torch says there is a CUDA device (there is none): ``auto`` would now pick CUDA and fail to
    use it, so a command that still ran on the CPU did so because it was told ``cpu``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def command_lines(runs: dict) -> dict[str, list[str]]:
    """Each command that takes ``--device``, with everything else it needs to run (but the flag)."""
    sentiment, chat = str(runs["sentiment"]), str(runs["chat"])
    return {
        "eval": ["eval", sentiment, "--data", str(runs["dev"]), "--json"],
        "predict": ["predict", sentiment, "--text", "a smart , moving story"],
        "generate": ["generate", chat, "what is 1 plus 2", "--max-new-tokens", "3", "--json"],
        "chat": ["chat", chat, "--max-new-tokens", "3"],
        "serve": ["serve", sentiment, "--port", "0"],
        "prompt": ["prompt", str(runs["config"]), f"data.train={runs['dev']}"],
        "compare": ["compare", str(runs["config"]), f"data.train={runs['dev']}", "--models", "ngram"],
        "export": ["export", sentiment, "--quantize", "int8", "--output", str(runs["sentiment"].parent / "x")],
    }


# -- (a) --device cpu runs, on the CPU ------------------------------------------------------------
def test_eval_predict_generate_run_on_the_cpu_when_told_even_with_a_gpu(runs, run_cli, a_gpu_in_name_only):
    lines = command_lines(runs)
    code, out, err = run_cli(*lines["eval"], "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["count"] == 16
    code, out, err = run_cli(*lines["predict"], "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["label"] in ("neg", "pos")
    code, out, err = run_cli(*lines["generate"], "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["new_tokens"] >= 1


def test_the_device_reaches_the_model(runs, monkeypatch):
    """What ``--device`` says is what the predictor and generator resolve, and where their weights are."""
    from lmforge.inference import generator, predictor

    asked = []

    def spy(spec="auto"):
        asked.append(spec)
        return resolve_device(spec)

    monkeypatch.setattr(predictor, "resolve_device", spy)
    monkeypatch.setattr(generator, "resolve_device", spy)
    assert main(["predict", str(runs["sentiment"]), "--text", "fine", "--device", "cpu"]) == 0
    assert main(["generate", str(runs["chat"]), "hi", "--max-new-tokens", "2", "--device", "cpu", "--json"]) == 0
    assert asked and set(asked) == {"cpu"}
    run = predictor.RunPredictor(runs["sentiment"], device="cpu")
    assert run.device == torch.device("cpu") and next(run.model.parameters()).device == torch.device("cpu")


def test_serve_loads_on_the_device_it_is_given(runs, a_gpu_in_name_only):
    """``serve --device cpu`` where torch sees a GPU: the CPU batch size, weights and dtype check on
    the CPU (asking CUDA whether it computes bfloat16 would fail here)."""
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    settings = ServeSettings(sources=[str(runs["sentiment"]), str(runs["chat"])], device="cpu")
    settings.check()
    assert settings.max_batch == 8  # the CPU default (32 on a GPU)
    state = ServerState(settings, open_models(settings))
    try:
        state.load()
        devices = {
            next(m.predictor.model.parameters()).device if hasattr(m, "predictor") else m.generator.device
            for m in state.models.values()
        }
    finally:
        state.close()
    assert devices == {torch.device("cpu")}


def test_prompt_and_compare_pass_the_device_on_as_the_config_key(runs, monkeypatch):
    """A config command's ``--device`` is its ``device`` key (the training, prompting and timing read
    it); without the flag the config's own key stands."""
    from lmforge.cli import compare, prompt

    seen = {}

    def stop(name):
        def record(*args, **kwargs):
            seen[name] = args
            raise ConfigError("stopped here by the test")

        return record

    monkeypatch.setattr(prompt, "run_prompt", stop("prompt"))
    monkeypatch.setattr(compare, "run_compare", stop("compare"))
    lines = command_lines(runs)
    assert main([*lines["prompt"], "--device", "cpu"]) == 2
    assert seen["prompt"][0].device == "cpu"
    assert main([*lines["compare"], "--device", "cpu"]) == 2
    assert seen["compare"][1][-1] == "device=cpu"
    assert main(lines["compare"]) == 2
    assert not any(o.startswith("device=") for o in seen["compare"][1])


# -- (b), (c) a wrong device is one line ----------------------------------------------------------
COMMANDS = ("eval", "predict", "generate", "chat", "serve", "prompt", "compare", "export")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_device_that_is_not_one_is_one_line(command, runs, run_cli):
    code, out, err = run_cli(*command_lines(runs)[command], "--device", "gpu")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "lmforge: error: device: 'gpu' is not one of auto, cpu, cuda, cuda:N (N: a GPU's 0-based index)"
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
@pytest.mark.parametrize("command", COMMANDS)
def test_cuda_without_cuda_is_one_line(command, runs, run_cli):
    code, out, err = run_cli(*command_lines(runs)[command], "--device", "cuda")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("lmforge: error: device: 'cuda' asks for CUDA, and torch sees no CUDA device")


# -- (d) the resolver -----------------------------------------------------------------------------
def test_resolve_device_cpu_and_auto_without_cuda(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:", "CPU", " cpu", "cuda:-1", "cuda:0:1", "", "mps"])
def test_resolve_device_refuses_what_is_not_a_device(spec):
    with pytest.raises(ConfigError) as error:
        resolve_device(spec)
    assert str(error.value) == f"device: '{spec}' is not one of auto, cpu, cuda, cuda:N (N: a GPU's 0-based index)"


def test_the_config_key_and_the_resolver_accept_the_same_values(tmp_path, monkeypatch):
    """The config's ``device`` pattern and ``resolve_device`` agree on what is a device (here, with no
    CUDA, a CUDA device is accepted as a spelling and refused as absent)."""
    from lmforge.config import load_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"task: classification\ndata: {{train: {write_jsonl(tmp_path / 't.jsonl', sentiment_rows(4, 0))}}}\n"
    )
    for spec in ("auto", "cpu", "cuda", "cuda:3"):
        assert load_config(str(config), [f"device={spec}"]).device == spec
        if "cuda" in spec:
            with pytest.raises(ConfigError, match="asks for CUDA"):
                resolve_device(spec)
        else:
            assert resolve_device(spec) == torch.device("cpu")
    for spec in ("gpu", "cuda:x"):
        with pytest.raises(ConfigError, match=f"device: '{spec}' is not one of auto, cpu, cuda, cuda:N"):
            load_config(str(config), [f"device={spec}"])  # the config says it as --device does
        with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N"):
            resolve_device(spec)


def test_a_gguf_on_a_gpu_goes_to_llama_cpp_offload_or_to_pytorch(monkeypatch, tmp_path):
    """Where llama.cpp can use the GPU the GGUF runs there; where it cannot, engine ``auto`` runs it
    on PyTorch on the GPU and an explicit llama_cpp engine is one line naming the fix."""
    from lmforge.inference import generator as module

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    opened: list[tuple] = []
    monkeypatch.setattr(module, "pick_engine", lambda source, engine: "torch" if engine == "torch" else "llama_cpp")
    monkeypatch.setattr(module, "LlamaCppGenerator", lambda source, device=None: opened.append(("llama_cpp", device)))
    monkeypatch.setattr(module, "Generator", lambda source, *rest: opened.append(("torch", rest[1])))
    monkeypatch.setattr(module, "check_dtype", lambda dtype, device: None)
    monkeypatch.setattr(
        module, "resolve_device", lambda spec: torch.device("cuda", 0) if spec != "cpu" else torch.device("cpu")
    )
    monkeypatch.setattr(module, "llama_cpp_gpu", lambda: True)
    module.open_generator(str(gguf), device="auto", engine="auto")
    assert opened.pop() == ("llama_cpp", torch.device("cuda", 0))
    monkeypatch.setattr(module, "llama_cpp_gpu", lambda: False)
    module.open_generator(str(gguf), device="auto", engine="auto")
    assert opened.pop() == ("torch", "auto")
    module.open_generator(str(gguf), device="cpu", engine="auto")
    assert opened.pop() == ("llama_cpp", torch.device("cpu"))
    module.open_generator(str(gguf), device="cuda", engine="auto")  # auto: the engine that can use it
    assert opened.pop() == ("torch", "cuda")
    for device in ("auto", "cuda"):
        with pytest.raises(ConfigError, match="built for the CPU only"):
            module.open_generator(str(gguf), device=device, engine="llama_cpp")
