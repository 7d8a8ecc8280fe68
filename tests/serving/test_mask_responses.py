"""serve --mask-responses: personal data in generated answers masked, whole or streamed however the
text is cut into pieces, and logprobs (whose tokens would show it) refused."""

import asyncio
import json
import random
import threading
from types import SimpleNamespace

import pytest
from served import make_state, runs  # noqa: F401  (fixtures)

from lmforge.errors import ConfigError
from lmforge.masking.mask import Masker
from lmforge.masking.stream import StreamMasker
from lmforge.serving.metrics import Metrics
from lmforge.serving.services import completions
from lmforge.serving.settings import ServeSettings

TYPES = ("email", "phone", "cn_id", "bank_card", "ip")
ANSWER = (
    "Write to john.doe@example.com or call +1 (415) 555-0123; card 4111 1111 1111 1111, "
    "server 2001:db8::1. 身份证 11010519491231002X，手机13812345678。"
)
MASKED = "Write to [EMAIL] or call [PHONE]; card [BANK_CARD], server [IP]. 身份证 [CN_ID]，手机[PHONE]。"


def _pieces(text: str, seed: int) -> list[str]:
    rng, out, i = random.Random(seed), [], 0
    while i < len(text):
        k = rng.randint(1, 9)
        out.append(text[i : i + k])
        i += k
    return out


@pytest.mark.parametrize("seed", range(20))
def test_a_streamed_text_masks_as_the_whole_text_does(seed):
    masker = Masker(TYPES)
    assert masker.mask([ANSWER])[0][0] == MASKED
    stream = StreamMasker(masker)
    assert "".join([stream.feed(piece) for piece in _pieces(ANSWER, seed)] + [stream.flush()]) == MASKED


def _running(stream: bool, seed: int = 0):
    events: asyncio.Queue = asyncio.Queue()
    for piece in _pieces(ANSWER, seed):
        events.put_nowait((0, "text", piece))
    events.put_nowait((0, "done", ("stop", 40)))
    job = SimpleNamespace(rows=[SimpleNamespace(prompt=[1])], cancelled=threading.Event())
    return completions.Running(
        job, events, "chat", True, 5, False, Metrics(), None, masker=completions.response_masker(TYPES)
    )


def test_answers_are_masked_whole_and_streamed():
    answer = asyncio.run(completions.collect(_running(False)))
    assert answer.choices[0].message.content == MASKED

    async def streamed():
        return [chunk async for chunk in completions.stream(_running(True, 3))]

    text = ""
    for chunk in asyncio.run(streamed()):
        if chunk.startswith("data: {"):
            for choice in json.loads(chunk[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    assert text == MASKED


def test_logprobs_are_refused_and_bad_types_fail_at_start(runs):  # noqa: F811
    state = make_state(runs, mask_responses=["email"])
    try:
        from fastapi.testclient import TestClient
        from served import API_KEY

        from lmforge.serving.app import create_app

        with TestClient(create_app(state), headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            body = {"model": "chat", "prompt": "hi", "max_tokens": 3, "logprobs": 2}
            refused = client.post("/v1/completions", json=body)
            assert refused.status_code == 400 and "masks personal data" in refused.json()["error"]["message"]
            del body["logprobs"]
            assert client.post("/v1/completions", json=body).status_code == 200
    finally:
        state.close()
    with pytest.raises(ConfigError, match="mask-responses 'person'"):
        ServeSettings(sources=["x"], mask_responses=["person"]).check()
