"""The live progress bar: step, loss, learning rate, speed and ETA (tqdm, on stderr)."""

import sys


class Progress:
    """A step counter bar; disabled with ``--quiet`` or off the main process."""

    def __init__(self, total: int, initial: int, disabled: bool):
        self.bar = None
        self.postfix: dict = {}
        if not disabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                desc="train",
                smoothing=0.1,
            )

    def update(self, step: int, lr: float) -> None:
        if self.bar is None:
            return
        self.postfix["lr"] = f"{lr:.2e}"
        self.bar.n = step
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.refresh()

    def show_loss(self, loss: float, examples_per_s: float | None) -> None:
        self.postfix["loss"] = f"{loss:.4f}"
        if examples_per_s:
            self.postfix["ex/s"] = f"{examples_per_s:.0f}" if examples_per_s >= 10 else f"{examples_per_s:.2g}"

    def note(self, text: str) -> None:
        if text:
            self.postfix["eval"] = text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
