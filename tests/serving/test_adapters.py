"""Many LoRA runs on one base (serve --adapters): each adapter answers as its merged run does alone,
requests for the base and for different adapters decode together in one batch and each answers as
it does alone, and what cannot be served that way is refused at start-up."""

import threading

import pytest
import torch
from served import runs, write_jsonl  # noqa: F401  (fixture)

from lmforge.cli.main import main
from lmforge.errors import ConfigError

PROMPTS = ["what is 1 plus 2", "what is 4 plus 4", "hello there"]


@pytest.fixture(scope="module")
def adapters(runs, tmp_path_factory):
    """Two LoRA runs on the tiny chat run's model, taught different answers."""
    root = tmp_path_factory.mktemp("adapters")
    base = runs["chat"] / "model"
    out = {}
    for name, answer in (("yes", "yes yes"), ("no", "no way")):
        rows = [{"instruction": f"what is {a} plus {b}", "output": answer} for a in range(5) for b in range(5)]
        config = root / f"{name}.yaml"
        config.write_text(
            f"task: causal_lm\nmodel: {{path: {base}}}\ntuning: {{method: lora, r: 8, alpha: 32, target: all-linear}}\n"
        )
        argv = [
            "train",
            "--quiet",
            str(config),
            f"data.train={write_jsonl(root / f'{name}.jsonl', rows)}",
            "data.split=0.2",
            "train.epochs=8",
            "train.lr=3e-2",
            "train.batch_size=8",
            "train.warmup=0",
            "data.max_length=64",
            f"output={root / name}",
        ]
        assert main(argv) == 0
        out[name] = root / name
    return out


def _state(runs, adapters, **extra):
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    config = ServeSettings(
        sources=[f"chat={runs['chat'] / 'model'}"],
        adapters=[f"{name}={run}" for name, run in adapters.items()],
        **{"dtype": "float32", **extra},  # compared with the float32 merged runs
    )
    config.check()
    return ServerState(config, open_models(config))


@pytest.fixture(scope="module")
def client(runs, adapters):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app

    state = _state(runs, adapters)
    state.load()
    with TestClient(create_app(state)) as test_client:
        yield test_client
    state.close()


def _reply(client, model: str, prompt: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 6, "temperature": 0}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_each_adapter_answers_as_its_merged_run(client, runs, adapters):
    from lmforge.inference.generator import Generator
    from lmforge.models.decoding import GenerationOptions

    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["yes"]["base"] == cards["no"]["base"] == "chat" and cards["chat"]["base"] is None
    scores = {}
    for name, run in [("chat", runs["chat"] / "model"), *adapters.items()]:
        merged = Generator(str(run))  # the run's own folder: LoRA merged into the weights
        for prompt in PROMPTS:
            assert _reply(client, name, prompt) == merged.generate(prompt, GenerationOptions(max_new_tokens=6)).text
        text = "what is 1 plus 2 yes yes no way"
        body = {"model": name, "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0}
        scores[name] = client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]["token_logprobs"][1:]
        ids = merged.encode(text, raw=True)
        with torch.inference_mode():
            logits = merged.model(torch.tensor([ids])).logits[0, :-1].float()
        want = logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        assert scores[name] == pytest.approx(want.tolist(), abs=1e-4)
    for a, b in (("chat", "yes"), ("chat", "no"), ("yes", "no")):  # each adapter changed the model its own way
        assert max(abs(x - y) for x, y in zip(scores[a], scores[b])) > 1e-2


def _scores(client, model: str, prompt: str) -> list[float]:
    body = {"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 0}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["logprobs"]["token_logprobs"]


def test_mixed_adapter_requests_decode_together_as_alone(client):
    alone = {(m, p): _scores(client, m, p) for m in ("chat", "yes", "no") for p in PROMPTS}
    together: dict = {}

    def ask(key):
        together[key] = _scores(client, *key)

    threads = [threading.Thread(target=ask, args=(key,)) for key in alone]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert together.keys() == alone.keys()
    for key, values in alone.items():  # each row through its own adapter in the shared batch
        assert together[key] == pytest.approx(values, abs=1e-4), (key, together[key], values)


def test_adapters_that_cannot_be_served_are_refused(runs, adapters, tmp_path):
    with pytest.raises(ConfigError, match="not served"):
        from lmforge.serving.services import open_models
        from lmforge.serving.settings import ServeSettings

        open_models(ServeSettings(sources=[str(runs["sentiment"])], adapters=[str(adapters["yes"])]))
    with pytest.raises(ConfigError, match="LoRA"):
        _state(runs, {"full": runs["chat"]})
    with pytest.raises(ConfigError, match="PyTorch"):
        _state(runs, adapters, engine="llama_cpp")


ADMIN = "admin-key-0123456789"


def test_adapters_load_and_unload_at_run_time_with_the_admin_key(runs, adapters):
    from fastapi.testclient import TestClient

    from lmforge.inference.generator import Generator
    from lmforge.models.decoding import GenerationOptions
    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    config = ServeSettings(
        sources=[f"chat={runs['chat'] / 'model'}"], api_key="api-key-0123456789", admin_key=ADMIN, dtype="float32"
    )
    config.check()
    state = ServerState(config, open_models(config))
    state.load()
    api = {"Authorization": "Bearer api-key-0123456789"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"name": "yes", "run": str(adapters["yes"])}
    with TestClient(create_app(state)) as client:
        assert client.post("/v1/admin/adapters", json=body).status_code == 401
        assert client.post("/v1/admin/adapters", json=body, headers=api).status_code == 401  # the API key is not enough
        card = client.post("/v1/admin/adapters", json=body, headers=admin)
        assert card.status_code == 200 and card.json()["base"] == "chat", card.text
        client.headers.update(api)
        merged = Generator(str(adapters["yes"]))
        assert (
            _reply(client, "yes", PROMPTS[0]) == merged.generate(PROMPTS[0], GenerationOptions(max_new_tokens=6)).text
        )
        again = client.post("/v1/admin/adapters", json=body, headers=admin)
        assert again.status_code == 400 and "two models" in again.json()["error"]["message"]
        full = client.post("/v1/admin/adapters", json={"name": "f", "run": str(runs["chat"])}, headers=admin)
        assert full.status_code == 400 and "LoRA" in full.json()["error"]["message"]
        # Any public name: peft's module dicts refuse "." and collide with attributes such as "float".
        for name in (".", "float", "a.b"):
            odd = client.post("/v1/admin/adapters", json={**body, "name": name}, headers=admin)
            assert odd.status_code == 200, odd.text
        assert _reply(client, "float", PROMPTS[0]) == _reply(client, "yes", PROMPTS[0])
        assert client.delete("/v1/admin/adapters/float", headers=admin).status_code == 200
        assert client.delete("/v1/admin/adapters/a.b", headers=admin).status_code == 200
        assert client.delete("/v1/admin/adapters/yes", headers=admin).status_code == 200
        gone = client.post(
            "/v1/chat/completions", json={"model": "yes", "messages": [{"role": "user", "content": "x"}]}
        )
        assert gone.status_code == 404
        assert client.delete("/v1/admin/adapters/yes", headers=admin).status_code == 404
        assert (
            _reply(client, "chat", PROMPTS[0])
            == Generator(str(runs["chat"] / "model")).generate(PROMPTS[0], GenerationOptions(max_new_tokens=6)).text
        )
    state.close()
