"""The metrics log: ``metrics.jsonl`` (one JSON object per log step or evaluation) and TensorBoard.

Line kinds: ``train`` (step, epoch, loss, lr, grad_norm, examples_per_s, elapsed_s), ``eval``
(split, step, epoch and every scalar metric), ``final`` (split, checkpoint and scalar metrics).
"""

import json
import logging
import math
from pathlib import Path

log = logging.getLogger("lmforge")


def read_metrics(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file; lines that are cut off or not objects are skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: the rest of the log is still good
            if isinstance(row, dict):
                rows.append(row)
    return rows


STOPPED_ROW = "stopped"  # the kind of the row a run stopped by a signal ends its log with


class MetricsLog:
    """Appends to ``metrics.jsonl`` and mirrors scalars to TensorBoard events (if installed)."""

    def __init__(self, path: Path, events: Path | None, resume_step: int | None = None, mirror=None):
        self.path = path
        self.mirror = mirror  # external trackers (``tracking/external.py``): each row goes there too
        if resume_step is not None:
            # Drop what was logged after the checkpoint we resume from: it will be logged again.
            ended = ("final", STOPPED_ROW)
            kept = [r for r in read_metrics(path) if r.get("kind") not in ended and r.get("step", 0) <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self.handle = open(path, "a", encoding="utf-8")
        self.writer = None
        if events is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(events), purge_step=resume_step)
            except ImportError:
                log.warning("tensorboard is not installed: no events/ written (pip install tensorboard)")

    def write(self, row: dict) -> None:
        self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.handle.flush()
        if self.mirror is not None:
            self.mirror.log(row)
        if self.writer is not None and "step" in row:
            prefix = row.get("split", row.get("kind", "train"))
            for key, value in row.items():
                if (
                    key not in ("step", "epoch")
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                ):
                    self.writer.add_scalar(f"{prefix}/{key}", value, row["step"])

    def close(self) -> None:
        self.handle.close()
        if self.writer is not None:
            self.writer.close()
