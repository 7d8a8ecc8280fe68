"""The dynamic batcher: requests that arrive together run as one batch, in order, and a full queue
is refused at once."""

import threading
import time

import pytest

from lmforge.serving.batching import Batcher, QueueFull


def test_concurrent_requests_share_batches_and_keep_their_order():
    sizes, release = [], threading.Event()

    def fn(inputs):
        release.wait(5)
        sizes.append(len(inputs))
        return [x * 10 for x in inputs]

    batcher = Batcher(fn, max_batch=8, max_wait_s=0.05, max_queue=16)
    futures = [batcher.submit([i, i + 100]) for i in range(6)]  # 12 inputs
    release.set()
    assert [f.result(5) for f in futures] == [[i * 10, (i + 100) * 10] for i in range(6)]
    assert sum(sizes) == 12 and max(sizes) <= 8 and len(sizes) <= 3  # batched, never over the limit
    batcher.close()


def test_a_request_bigger_than_a_batch_is_split_and_reassembled():
    sizes = []
    batcher = Batcher(lambda xs: sizes.append(len(xs)) or [-x for x in xs], max_batch=4, max_wait_s=0)
    assert batcher.submit(list(range(10))).result(5) == [-x for x in range(10)]
    assert sizes == [4, 4, 2]
    batcher.close()


def test_full_queue_is_refused_at_once_and_errors_reach_their_request():
    gate = threading.Event()

    def fn(inputs):
        gate.wait(5)
        if "bad" in inputs:
            raise ValueError("broken input")
        return inputs

    batcher = Batcher(fn, max_batch=1, max_wait_s=0, max_queue=2)
    first = batcher.submit(["a"])
    time.sleep(0.1)  # the worker holds "a"; two more may wait
    waiting = [batcher.submit(["bad"]), batcher.submit(["c"])]
    started = time.perf_counter()
    with pytest.raises(QueueFull):
        batcher.submit(["d"])
    assert time.perf_counter() - started < 0.5
    gate.set()
    assert first.result(5) == ["a"] and waiting[1].result(5) == ["c"]
    with pytest.raises(ValueError, match="broken input"):
        waiting[0].result(5)
    batcher.close()
