"""The llama.cpp engine on a run exported with ``lmforge export --gguf f32``: the same logits, greedy
replies and log-probabilities as the PyTorch engine on the run itself, and the server's features
(logprobs, echo, structured output, stop strings) on it."""

import json

import pytest
import torch
from served import runs  # noqa: F401  (fixture)

from lmforge.cli.main import main
from lmforge.models.decoding import GenerationOptions

pytest.importorskip("llama_cpp")

MAX_POSITIONS = 8192  # inference/llama_cpp.MAX_CONTEXT
PROMPTS = ["what is 1 plus 2", "what is 5 plus 5 and then what is 3 plus 4", "hello"]


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "chat-f32"
    assert main(["export", str(runs["chat"]), "--gguf", "f32", "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def engines(runs, exported):
    from lmforge.inference.generator import Generator, open_generator
    from lmforge.inference.llama_cpp import LlamaCppGenerator

    fast = open_generator(str(exported), engine="auto")
    assert isinstance(fast, LlamaCppGenerator) and fast.weights == "gguf f32"
    return Generator(str(runs["chat"])), fast


def test_llama_cpp_computes_the_logits_pytorch_does(engines):
    torch_gen, fast = engines
    for prompt in PROMPTS:
        ids = torch_gen.encode(prompt)
        assert fast.encode(prompt) == ids
        with torch.inference_mode():
            want = torch_gen.model(torch.tensor([ids])).logits[0].float()
        assert torch.allclose(torch.from_numpy(fast.prefill(ids)), want[-1], atol=2e-3)
        assert torch.allclose(fast.prompt_logits(ids), want[:-1], atol=2e-3)


def test_greedy_and_seeded_replies_are_the_same_on_both_engines(engines):
    torch_gen, fast = engines
    for prompt in PROMPTS:
        options = GenerationOptions(max_new_tokens=12)
        assert fast.generate(prompt, options).text == torch_gen.generate(prompt, options).text
    seeded = GenerationOptions(max_new_tokens=24, temperature=1.0, top_k=50, seed=4)
    whole = fast.generate("hello", seeded)
    assert fast.generate("hello", seeded).text == whole.text  # a seed reproduces
    at = next(k for k in range(1, len(whole.text)) if whole.text.index(whole.text[k]) == k)
    cut = GenerationOptions(max_new_tokens=24, temperature=1.0, top_k=50, seed=4, stop=[whole.text[at]])
    stopped = fast.generate("hello", cut)
    assert (stopped.text, stopped.stopped_by) == (whole.text[:at], "stop")
    with pytest.raises(Exception, match="num-beams"):
        fast.generate("hello", GenerationOptions(num_beams=2))


def test_generate_cli_takes_the_engine(exported, runs, run_cli):
    replies = {}
    for engine in ("llama_cpp", "torch"):
        code, out, err = run_cli(
            "generate",
            str(exported),
            "what is 2 plus 2",
            "--engine",
            engine,
            "--json",
            "--max-new-tokens",
            "8",
            "--dtype",
            "float32",
        )
        assert code == 0, err
        replies[engine] = json.loads(out)["text"]
    assert replies["llama_cpp"] == replies["torch"]
    code, _, err = run_cli("generate", str(runs["chat"]), "hi", "--engine", "llama_cpp")
    assert code != 0 and "GGUF" in err


@pytest.fixture(scope="module")
def served(exported, runs):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    config = ServeSettings(sources=[f"fast={exported}", f"slow={runs['chat']}"], engine="auto", dtype="float32")
    config.check()
    state = ServerState(config, open_models(config))
    state.load()
    with TestClient(create_app(state)) as client:
        yield client
    state.close()


def test_the_server_answers_the_same_on_llama_cpp(served):
    cards = {card["id"]: card for card in served.get("/v1/models").json()["data"]}
    assert cards["fast"]["dtype"] == "gguf f32" and cards["slow"]["dtype"] == "float32"
    body = {"prompt": "what is 3 plus 3", "max_tokens": 8, "temperature": 0, "logprobs": 2, "echo": True}
    fast = served.post("/v1/completions", json={**body, "model": "fast"}).json()["choices"][0]
    slow = served.post("/v1/completions", json={**body, "model": "slow"}).json()["choices"][0]
    assert fast["text"] == slow["text"]
    assert fast["logprobs"]["tokens"] == slow["logprobs"]["tokens"]
    assert fast["logprobs"]["token_logprobs"][1:] == pytest.approx(slow["logprobs"]["token_logprobs"][1:], abs=2e-3)


def test_structured_output_and_streaming_on_llama_cpp(served):
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 50}, "ok": {"type": "boolean"}},
        "required": ["n", "ok"],
        "additionalProperties": False,
    }
    body = {
        "model": "fast",
        "messages": [{"role": "user", "content": "what is 2 plus 2"}],
        "max_tokens": 60,
        "temperature": 1.0,
        "seed": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    choice = served.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and set(json.loads(choice["message"]["content"])) == {"n", "ok"}
    with served.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == choice["message"]["content"]  # the same seed, streamed


def test_label_scores_are_the_same_on_both_engines(engines):
    from lmforge.prompting.scoring import score_labels

    torch_gen, fast = engines
    answers = [torch_gen.tokenizer(a, add_special_tokens=False)["input_ids"] for a in ("yes", "no way", "what")]
    assert max(len(a) for a in answers) > 1  # a continuation is scored past its first token too
    prompts = [torch_gen.encode(p) for p in PROMPTS]
    want, _ = score_labels(torch_gen.model, prompts, answers, pad=0)
    got = torch.tensor([fast.score_continuations(ids, answers) for ids in prompts])
    assert torch.allclose(got.float(), want, atol=2e-3), (got, want)


def test_prompt_classifies_the_same_on_both_engines(exported, tmp_path, run_cli):
    from conftest import sentiment_rows, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(12, 1))
    predictions = {}
    for engine in ("llama_cpp", "torch"):
        config = tmp_path / f"{engine}.yaml"
        config.write_text(
            "task: classification\n"
            f"data: {{train: {train}, validation: {dev}, label_names: {{neg: negative, pos: positive}}}}\n"
            f"prompt: {{model: '{exported}', engine: {engine}, shots: 2, seed: 1}}\n"
        )
        code, _, err = run_cli("prompt", str(config), f"output={tmp_path / engine}", "--quiet")
        assert code == 0, err
        rows = (tmp_path / engine / "predictions.jsonl").read_text().splitlines()
        predictions[engine] = [json.loads(row) for row in rows]
    assert len(predictions["torch"]) == 12
    for fast, slow in zip(predictions["llama_cpp"], predictions["torch"]):
        assert fast["label"] == slow["label"] and fast["score"] == pytest.approx(slow["score"], abs=1e-3)


def _run_engine(engine, prompts, max_new=10, **row):
    """Submit one job per prompt at once and wait for all; each reply's text."""
    import threading

    from lmforge.serving.engine import Job, Row

    done, texts = threading.Event(), {}

    def emitter(k):
        def emit(index, kind, value):
            if kind == "done":
                texts[k] = rows[k].text
                if len(texts) == len(prompts):
                    done.set()
            elif kind == "error":
                texts[k] = f"error: {value}"
                done.set()

        return emit

    rows = [Row(p, max_new, row.get("temperature", 0.0), 1.0, [], row.get("seed"), 0) for p in prompts]
    for k, r in enumerate(rows):
        engine.submit(Job([r], emitter(k)))
    assert done.wait(60)
    return [texts[k] for k in range(len(prompts))]


def test_concurrent_rows_decode_together_with_the_replies_they_get_alone(engines):
    from lmforge.serving.engine import LlamaCppEngine

    _, fast = engines
    sizes: list[int] = []
    engine = LlamaCppEngine(fast, max_batch=4, on_batch=sizes.append)
    try:
        prompts = [fast.encode(p) for p in PROMPTS] + [fast.encode(PROMPTS[1] + " please")]
        alone = [fast.generate_ids(ids, GenerationOptions(max_new_tokens=10)).text for ids in prompts]
        assert _run_engine(engine, prompts) == alone
        assert max(sizes) > 1  # several rows in one llama_decode
        shared = [engine.sequences.cached[s] for s in range(1, engine.sequences.count)]
        assert any(c[: len(prompts[1])] == prompts[1] for c in shared)  # caches stay for the next prompt
        sizes.clear()
        assert _run_engine(engine, prompts) == alone  # now after the prefixes the caches share
        seeded = _run_engine(engine, prompts[:2], max_new=12, temperature=1.0, seed=3)
        assert _run_engine(engine, prompts[:2], max_new=12, temperature=1.0, seed=3) == seeded
    finally:
        engine.close()


def test_rows_wait_for_room_in_the_cache_and_long_prompts_go_in_parts(engines, monkeypatch):
    from lmforge.inference import llama_cpp as module
    from lmforge.serving.engine import LlamaCppEngine

    _, fast = engines
    ids = fast.encode(PROMPTS[1])
    whole = fast.prompt_logits(ids)
    monkeypatch.setattr(module, "BATCH", 3)  # prompts of several llama_decode calls
    assert torch.allclose(fast.prompt_logits(ids), whole, atol=1e-4)
    sizes: list[int] = []
    engine = LlamaCppEngine(fast, max_batch=4, on_batch=sizes.append)
    try:
        prompts = [fast.encode(p) for p in PROMPTS]
        alone = [fast.generate_ids(p, GenerationOptions(max_new_tokens=10)).text for p in prompts]
        engine.sequences.positions = max(len(p) for p in prompts) + 12  # room for one row at a time
        assert _run_engine(engine, prompts) == alone
        assert max(sizes) == 1 and engine.sequences.used() <= engine.sequences.positions
    finally:
        engine.sequences.positions = module.MAX_CONTEXT
        engine.close()


def test_a_sequence_takes_a_shared_prefix_from_another_without_computing_it(engines):
    _, fast = engines
    sequences = fast.open_sequences(3)
    ids = fast.encode(PROMPTS[1])
    want = fast.prompt_logits(ids)  # sequence 0, computed from the start
    sequences.drop(1)
    sequences.decode([(1, ids[:5], False)])
    sequences.drop(2)
    sequences.share(1, 2, 5)
    assert sequences.cached[2] == ids[:5]
    got = sequences.decode([(2, ids[5:-1], True)])[0]
    assert torch.allclose(torch.from_numpy(got), want[5:], atol=1e-4)
    sequences.drop(1)  # the shared cells stay sequence 2's
    assert torch.allclose(
        torch.from_numpy(sequences.decode([(2, ids[-1:], False)])[0]), torch.from_numpy(fast.prefill(ids)), atol=1e-4
    )


def test_rows_that_outgrow_the_cache_are_preempted_and_go_on_with_the_same_reply(engines, monkeypatch):
    from lmforge.serving import engine as module
    from lmforge.serving.engine import LlamaCppEngine

    _, fast = engines
    monkeypatch.setattr(module, "RESERVE", 1)  # join with room for one token: they must outgrow it
    engine = LlamaCppEngine(fast, max_batch=4)
    try:
        prompts = [fast.encode(p) for p in PROMPTS]
        alone = [fast.generate_ids(p, GenerationOptions(max_new_tokens=12)).text for p in prompts]
        seeded_alone = [_run_engine(engine, [p], max_new=12, temperature=1.0, seed=5)[0] for p in prompts]
        # room for every prompt and a few tokens each, not for all three replies at once
        engine.sequences.positions = sum(len(p) for p in prompts) + 12
        assert _run_engine(engine, prompts, max_new=12) == alone
        assert engine.preempted > 0 and engine.sequences.used() <= engine.sequences.positions
        engine.preempted = 0
        # seeded rows sample the same after being pre-empted (their random state goes with them)
        assert _run_engine(engine, prompts, max_new=12, temperature=1.0, seed=5) == seeded_alone
        assert engine.preempted > 0
    finally:
        engine.sequences.positions = MAX_POSITIONS
        engine.close()
