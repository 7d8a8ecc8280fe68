"""Batched generation: step-by-step decoding of several requests together gives what Hugging Face
``generate`` gives for each alone (greedy), a seed reproduces a sampled reply in any batch, stop
strings end a reply without showing, and a cancelled request leaves the batch."""

import threading

import pytest
import torch
from served import runs  # noqa: F401  (fixture)

from lmforge.models.decoding import GenerationOptions
from lmforge.serving.engine import GenerationEngine, Job, Row

PROMPTS = ["what is 1 plus 2", "what is 5 plus 5 and then what is 3 plus 4", "hello"]


@pytest.fixture(scope="module")
def generator(runs):
    from lmforge.inference.generator import Generator

    return Generator(str(runs["chat"]))


def run_jobs(engine, specs):
    """specs: list of (prompt ids, max_new, temperature, stops, seed) -> [(text, finish, tokens)]."""
    done, results, jobs = threading.Event(), {}, []
    for k, (ids, max_new, temperature, stops, seed) in enumerate(specs):

        def emit(row, kind, value, k=k):
            text, finish = results.get(k, ("", None))[:2]
            if kind == "text":
                results[k] = (text + value, None, 0)
            elif kind == "done":
                results[k] = (text, value[0], value[1])
                if len(results) == len(specs) and all(r[1] for r in results.values()):
                    done.set()

        jobs.append(Job([Row(ids, max_new, temperature, 1.0, stops, seed, 0)], emit))
    for job in jobs:
        engine.submit(job)
    assert done.wait(30)
    return [results[k] for k in range(len(specs))]


def test_batched_greedy_equals_generate_alone(generator):
    engine = GenerationEngine(generator, max_batch=8)
    prompts = [generator.encode(p) for p in PROMPTS]
    got = run_jobs(engine, [(ids, 12, 0.0, [], None) for ids in prompts])
    for ids, (text, finish, tokens) in zip(prompts, got):
        alone = generator.generate_ids(ids, GenerationOptions(max_new_tokens=12))
        assert text == alone.text
        assert tokens == alone.new_tokens and finish == ("length" if alone.stopped_by == "length" else "stop")
    engine.close()


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(generator):
    engine = GenerationEngine(generator, max_batch=8)
    ids = generator.encode(PROMPTS[0])
    alone = run_jobs(engine, [(ids, 10, 1.0, [], 7)])[0]
    together = run_jobs(engine, [(generator.encode(PROMPTS[1]), 10, 1.0, [], 3), (ids, 10, 1.0, [], 7)])[1]
    assert alone == together
    engine.close()


def test_stop_string_ends_the_reply_and_is_not_shown(generator):
    engine = GenerationEngine(generator, max_batch=8)
    ids = generator.encode(PROMPTS[0])
    full = run_jobs(engine, [(ids, 12, 0.0, [], None)])[0][0]
    if len(full) < 3:
        pytest.skip("the tiny model's reply is too short to cut")
    stop = full[1:3]
    text, finish, _ = run_jobs(engine, [(ids, 12, 0.0, [stop], None)])[0]
    assert finish == "stop" and text == full[: full.index(stop)] and stop not in text
    engine.close()


def test_a_cancelled_job_leaves_the_batch(generator):
    engine = GenerationEngine(generator, max_batch=8)
    ids = generator.encode(PROMPTS[0])
    pieces, finished = [], threading.Event()
    job = Job([Row(ids, 10_000, 1.0, 1.0, [], 1, 0)], lambda row, kind, value: pieces.append(kind))
    other = {}
    keep = Job(
        [Row(ids, 5, 0.0, 1.0, [], None, 0)],
        lambda row, kind, value: (other.setdefault(kind, value), kind == "done" and finished.set()),
    )
    engine.submit(job)
    job.cancelled.set()
    engine.submit(keep)
    assert finished.wait(30)  # the engine went on to the next job
    assert "done" not in pieces  # the cancelled job was dropped, not finished
    engine.close()


def test_each_row_decodes_what_the_model_alone_would(generator):
    """Left padding and per-row positions are right: the prefill logits of a padded row equal the
    unpadded ones."""
    model, pad = generator.model, 0
    short, long = generator.encode(PROMPTS[2]), generator.encode(PROMPTS[1])
    width = len(long)
    ids = torch.tensor([[pad] * (width - len(short)) + short, long])
    mask = torch.tensor([[0] * (width - len(short)) + [1] * len(short), [1] * width])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        batched = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[0, -1]
        alone = model(input_ids=torch.tensor([short])).logits[0, -1]
    assert torch.allclose(batched, alone, atol=1e-5)


def test_rows_that_arrive_mid_batch_join_it_and_decode_as_alone(generator):
    engine = GenerationEngine(generator, max_batch=8)
    assert engine.joinable
    prompts = [generator.encode(p) for p in PROMPTS]
    alone = [generator.generate_ids(ids, GenerationOptions(max_new_tokens=20)).text for ids in prompts]
    started, done = threading.Event(), threading.Event()
    results, finished, batches, order = {k: "" for k in range(3)}, set(), [], []
    engine.on_batch = batches.append

    tokens = {k: [] for k in range(3)}

    def emitter(k):
        def emit(row, kind, value):
            order.append((k, kind))
            if kind == "text":
                results[k] += value
                started.set()
            elif kind == "token":
                tokens[k].append(value.token)
            elif kind == "done":
                finished.add(k)
                tokens[k].append(value[1])
                if len(finished) == len(prompts):
                    done.set()

        return emit

    engine.submit(Job([Row(prompts[0], 20, 0.0, 1.0, [], None, 0, 0)], emitter(0)))
    assert started.wait(30)  # the first row is decoding; the others arrive now
    for k in (1, 2):
        engine.submit(Job([Row(prompts[k], 20, 0.0, 1.0, [], None, 0, 0)], emitter(k)))
    assert done.wait(60)
    assert [results[k] for k in range(3)] == alone
    for k, ids in enumerate(prompts):  # every row took each of its tokens once, joins or not
        want = generator.generate_ids(ids, GenerationOptions(max_new_tokens=20))
        *taken, count = tokens[k]
        assert count == want.new_tokens and len(taken) == count - (want.stopped_by == "eos")
    assert batches[0] == 1 and sum(batches) == 3  # prefilled apart ...
    first_joiner = min(i for i, (k, _) in enumerate(order) if k != 0)
    assert first_joiner < order.index((0, "done"))  # ... and decoded together
    engine.close()
