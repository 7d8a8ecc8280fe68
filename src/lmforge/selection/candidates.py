"""``compare --models`` candidates: what each name means, as config overrides on the job's config.

A candidate is ``NAME[:MOD[:MOD...]]``:

- ``NAME`` is a model family (``lstm``, ``ngram``, ``transformer`` = a small transformer from
  scratch), ``config`` (the config's own ``model``, as written), a bundled alias (``minilm``,
  ``smollm2``), a local model folder, ``prompt`` (the
  config's ``prompt.model``, by label likelihood, no training) or ``similarity`` (zero-shot by
  ``minilm`` sentence similarity to the label names, no training);
- each ``MOD`` is a tuning method (``minilm:lora`` = ``tuning.method=lora``; ``minilm:setfit``:
  SetFit's contrastive pairs and a fitted head), ``Nshot`` (prompt
  with N in-context examples: ``prompt:8shot``, ``smollm2:8shot``) or a ``key=value`` override
  (``lstm:model.hidden=256``).

Family presets (``lstm``, ``transformer``) bring a learning rate that suits a model trained from
scratch (the job's rate is usually a fine-tuning one), and can themselves be overridden.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config.schema import SETFIT_UNUSED_TRAIN
from lmforge.errors import ConfigError
from lmforge.models.bundled import BUNDLED

TUNING_METHODS = ("full", "freeze", "lora", "adalora", "ia3", "prefix", "prompt", "ptuning", "setfit")
PRESETS = {
    "lstm": ["model={family: lstm, hidden: 256, embedding: 128}", "train.lr=2.0e-3", "train.warmup=0.0"],
    "transformer": ["model={family: transformer, layers: 2, hidden: 128, heads: 2}", "train.lr=5.0e-4"],
    "ngram": ["model={family: ngram}"],
}
SHOTS = re.compile(r"^(\d+)shots?$")


@dataclass
class Candidate:
    """One model to compare, as overrides on the job's config."""

    name: str  # as the user wrote it
    kind: str  # train | prompt
    overrides: list[str] = field(default_factory=list)
    shots: int | None = None  # prompt candidates: in-context examples (None: the config's)

    @property
    def slug(self) -> str:
        """A folder name for the candidate's run."""
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.name).strip("_") or "candidate"


def parse_candidates(text: str) -> list[Candidate]:
    """Parse ``--models``; an unknown name fails here, naming it, before anything trains."""
    names = [item.strip() for item in text.split(",") if item.strip()]
    if not names:
        raise ConfigError("compare --models: no candidate given")
    candidates = [parse_candidate(name) for name in names]
    seen = set()
    for candidate in candidates:
        if candidate.slug in seen:
            raise ConfigError(f"compare --models: '{candidate.name}' is given twice")
        seen.add(candidate.slug)
    return candidates


def parse_candidate(name: str) -> Candidate:
    head, *mods = name.split(":")
    if head in ("prompt", "similarity"):
        candidate = Candidate(name, "prompt")
        if head == "similarity":
            candidate.overrides += ["prompt.method=similarity", "prompt.model=minilm"]
    elif head == "config":
        candidate = Candidate(name, "train")
    elif head in PRESETS:
        candidate = Candidate(name, "train", list(PRESETS[head]))
    elif _is_model(head):
        candidate = Candidate(name, "train", [f"model={head}"])
    else:
        raise ConfigError(
            f"compare --models: unknown candidate '{name}': '{head}' is not a family "
            f"({', '.join(PRESETS)}), 'config', a bundled alias, a model folder, 'prompt' or 'similarity'"
        )
    for mod in mods:
        shots = SHOTS.match(mod)
        if shots:
            if candidate.kind == "train":  # smollm2:8shot = prompt smollm2 with 8 examples
                candidate.kind = "prompt"
                candidate.overrides = [f"prompt.model={head}"]
            if "prompt.method=similarity" in candidate.overrides:
                raise ConfigError(f"compare --models: '{name}': similarity takes no examples")
            candidate.shots = int(shots.group(1))
        elif mod in TUNING_METHODS and candidate.kind == "train":
            candidate.overrides.append(f"tuning.method={mod}")
            if mod == "setfit":  # the job's cross-entropy settings (EMA, R-Drop, ...) do not apply to it
                candidate.overrides += [
                    f"train.{key}={'null' if off is None else off}" for key, off in SETFIT_UNUSED_TRAIN.items()
                ]
        elif "=" in mod:
            candidate.overrides.append(mod)
        else:
            raise ConfigError(
                f"compare --models: '{name}': '{mod}' is not a tuning method "
                f"({', '.join(TUNING_METHODS)}), Nshot or key=value"
            )
    if candidate.shots is not None:
        candidate.overrides.append(f"prompt.shots={candidate.shots}")
    return candidate


def _is_model(head: str) -> bool:

    return head in BUNDLED or Path(head).expanduser().is_dir()
