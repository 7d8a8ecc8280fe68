"""One thread for every model call the server makes: loading, encoder batches, decoding steps.

Why one: PyTorch's CPU kernels run on OpenMP, and the first OS thread that uses OpenMP keeps the
fast thread team; kernels launched from other threads ran ~1.5–2x slower in our measurements
(MiniLM batch of 8 in bf16: 42 ms on the first thread, 60–87 ms from a second one, same process).
Routing every model call through this thread keeps the server on the fast path, and it also stops
two models' batches from fighting over the same cores.
"""

import queue
import threading
from concurrent.futures import Future


class ComputeThread:
    def __init__(self, name: str = "lmforge-compute"):
        self.name = name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            future, fn, args, kwargs = self._work.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn, *args, **kwargs) -> Future:
        self._start()
        future: Future = Future()
        self._work.put((future, fn, args, kwargs))
        return future

    def call(self, fn, *args, **kwargs):
        """Run ``fn`` on the compute thread and wait for it (inline if already there)."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()


COMPUTE = ComputeThread()
