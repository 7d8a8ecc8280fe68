"""Put on PYTHONPATH by tests/training/test_distributed.py: process 1 of a distributed job fails at
step LMFORGE_TEST_FAIL_STEP, as a real error in one process would (out of memory, a bad shard)."""

import os

if os.environ.get("RANK") == "1" and os.environ.get("LMFORGE_TEST_FAIL_STEP"):
    import lmforge.training.loop as loop
    from lmforge.errors import TrainingError

    original = loop._Loop._optimizer_step

    def failing(self):
        if self.state.step + 1 >= int(os.environ["LMFORGE_TEST_FAIL_STEP"]):
            raise TrainingError(f"rank 1 fails on purpose at step {self.state.step + 1}")
        original(self)

    loop._Loop._optimizer_step = failing
