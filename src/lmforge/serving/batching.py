"""Dynamic batching for the encoder routes: the inputs of requests that arrive within a few
milliseconds of each other run as one padded batch on a worker thread.

The queue is bounded (in requests): a request that finds it full is refused at once with
``QueueFull`` (the route answers 429) rather than waiting behind work it cannot overtake.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from lmforge.serving.compute import COMPUTE


class QueueFull(Exception):
    """The model's queue holds as many requests as it may; try again shortly."""


@dataclass
class _Job:
    inputs: list
    future: Future
    outputs: list = field(default_factory=list)
    taken: int = 0  # inputs handed to a batch so far
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Runs ``fn(list_of_inputs) -> list_of_outputs`` on batches of at most ``max_batch`` inputs.

    ``submit`` returns a future of the request's outputs in input order. A request with more inputs
    than ``max_batch`` is split over consecutive batches; requests are served first come, first
    served. ``on_batch(size)`` and ``on_queue(depth)`` report to the metrics.
    """

    def __init__(
        self,
        fn: Callable[[list], list],
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        name: str = "batcher",
        on_batch=None,
        on_queue=None,
    ):
        self.fn, self.max_batch, self.max_wait_s, self.max_queue = fn, max_batch, max_wait_s, max_queue
        self.on_batch, self.on_queue = on_batch or (lambda n: None), on_queue or (lambda n: None)
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, inputs: list) -> Future:
        future: Future = Future()
        if not inputs:
            future.set_result([])
            return future
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(f"{len(self._jobs)} requests are waiting for this model")
            self._jobs.append(_Job(list(inputs), future))
            self.on_queue(len(self._jobs))
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _take_batch(self) -> list[tuple[_Job, int, int]]:
        """Slices (job, start, end) filling one batch; waits for it to fill until the oldest
        request has waited ``max_wait`` (requests that queued behind a running batch go at once)."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return []
            deadline = self._jobs[0].arrived + self.max_wait_s
            while self._pending() < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, room = [], self.max_batch
            for job in self._jobs:
                if room == 0:
                    break
                count = min(room, len(job.inputs) - job.taken)
                batch.append((job, job.taken, job.taken + count))
                job.taken += count
                room -= count
            while self._jobs and self._jobs[0].taken == len(self._jobs[0].inputs):
                self._jobs.popleft()
            self.on_queue(len(self._jobs))
            return batch

    def _pending(self) -> int:
        return sum(len(job.inputs) - job.taken for job in self._jobs)

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            inputs = [x for job, start, end in batch for x in job.inputs[start:end]]
            self.on_batch(len(inputs))
            try:
                outputs = COMPUTE.call(self.fn, inputs)
            except BaseException as exc:  # a failed batch fails its requests, not the worker
                for job, _, _ in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            at = 0
            for job, start, end in batch:
                job.outputs.extend(outputs[at : at + end - start])
                at += end - start
                if len(job.outputs) == len(job.inputs) and not job.future.done():
                    job.future.set_result(job.outputs)
