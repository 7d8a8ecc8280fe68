"""An encoder-decoder run served: completions go through the generator one sequence at a time and
answer what ``lmforge generate`` answers."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))

from test_seq2seq import _rows, train_tiny_t5  # noqa: E402


def test_t5_run_serves_completions_like_generate(tmp_path, run_cli):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    out = train_tiny_t5(tmp_path, run_cli, _rows(32, 0))
    code, stdout, err = run_cli(
        "generate", str(out), "red cat", "--max-new-tokens", "5", "--json", "--dtype", "float32"
    )
    assert code == 0, err
    expected = json.loads(stdout)
    settings = ServeSettings(sources=[str(out)], dtype="float32")  # compared with generate in float32
    state = ServerState(settings, open_models(settings))
    state.load()
    client = TestClient(create_app(state))
    body = client.post(
        "/v1/completions", json={"model": "t5", "prompt": "red cat", "max_tokens": 5, "temperature": 0}
    ).json()
    assert body["choices"][0]["text"] == expected["text"]
    assert body["usage"]["completion_tokens"] == expected["new_tokens"]
    with client.stream(
        "POST",
        "/v1/completions",
        json={"model": "t5", "prompt": "red cat", "max_tokens": 5, "temperature": 0, "stream": True},
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == expected["text"]
    # T5 has relative positions, no length of its own: the run's lengths bound input and reply apart
    # (data.max_length=32 in, train.max_target_length 128 out), and a prompt + reply over 32 is fine
    over = client.post("/v1/completions", json={"model": "t5", "prompt": "red cat", "max_tokens": 129})
    assert over.status_code == 400 and "output limit of 128 tokens" in over.json()["error"]["message"]
    long = client.post("/v1/completions", json={"model": "t5", "prompt": "red cat " * 40, "max_tokens": 2})
    assert long.status_code == 400 and "input limit is 32" in long.json()["error"]["message"]
    ok = client.post("/v1/completions", json={"model": "t5", "prompt": "red cat " * 3, "max_tokens": 40})
    assert ok.status_code == 200, ok.text
    state.close()
