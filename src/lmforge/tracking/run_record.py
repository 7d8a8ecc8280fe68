"""The run record: ``lmforge.json``, the typed, versioned contract between the command that made a
run folder (``train``, ``prompt``, ``export``) and every command that reads it later (``eval``,
``predict``, ``generate``, ``serve``, ``compare``, ``export``, ``distil``).

This module is the only one that reads or writes the file. A record written by an older lmforge
is migrated on load (``migrate``), so run folders stay usable across releases; a record from a
newer lmforge than this one is refused with a message saying so.

Version history:
- 1 (no ``record_version`` key): lmforge 0.1.0 before the typed record. ``max_length`` could be
  missing (prompt runs), and readers then guessed it differently (512 in one place, the config's
  default 128 in another); ``head`` could be missing and was guessed per family.
- 2: the same keys, every one typed here, plus ``record_version``. Migration fills ``head`` from the
  task and ``max_length`` from the run's own ``config.yaml`` (else the config default).
- 3: ``continual``, the lineage and stage matrix of a continual-learning stage (``lmforge train
  --from RUN``). A version-2 record is a run that continued none: nothing to fill.
"""

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmforge.errors import RunFolderError

RECORD_VERSION = 3
RECORD_FILE = "lmforge.json"
DEFAULT_MAX_LENGTH = 128  # the config schema's default for the input length

# The model head each task trains (what a record without ``head`` had).
TASK_HEADS = {
    "classification": "sequence_classification",
    "token_classification": "token_classification",
    "causal_lm": "causal_lm",
    "masked_lm": "masked_lm",
    "seq2seq": "seq2seq",
}


class _Record(BaseModel):
    # Keys this version does not type are kept as they are (``extra``) and written back unchanged.
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @property
    def extra(self) -> dict:
        return dict(self.model_extra or {})

    def to_dict(self) -> dict:
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if v is not None or k in _KEEP_NULL}


_KEEP_NULL = {"labels"}  # written as null when absent: readers of version 1 expected the key


class ModelRecord(_Record):
    """What the model family recorded about the model a run trained or used."""

    family: str = "transformer"  # transformer | lstm | ngram | prompt (a prompt run has no weights)
    source: str | None = None  # bundled alias, local folder, or "scratch"
    source_path: str | None = None  # the resolved folder the weights came from
    arch: str | None = None  # model type (bert, llama, t5, lstm, crf, ...)
    vocab_size: int | None = None
    parameters: dict | None = None  # {"trainable": N, "total": N}
    one_pass: bool | None = None  # the n-gram family: learns in one pass, predicts by itself


class RunRecord(_Record):
    """The typed content of ``lmforge.json``."""

    task: str  # the config's task
    head: str  # the model head (see TASK_HEADS)
    model: ModelRecord = Field(default_factory=ModelRecord)
    labels: dict | None = None  # LabelSet.to_json(): {"names": [...], "raw_to_name": {...}}
    max_length: int = DEFAULT_MAX_LENGTH  # input tokens the model was trained (and predicts) with
    fields: dict = Field(default_factory=dict)  # the data.fields the run read its data with
    tuning: str | None = None  # the tuning method (full, lora, ...)
    parameters: dict | None = None  # {"trainable": N, "total": N}
    head_options: dict | None = None  # the task's own options (Task.head_options())
    finished: bool = False  # training (or prompting) ran to the end
    created: str | None = None  # ISO time the record was written
    lmforge_version: str | None = None
    versions: dict | None = None  # library versions: torch, transformers, peft
    best: dict | None = None  # {"metric", "value", "step", "checkpoint"}
    training: dict | None = None  # {"steps", "epochs_completed", "wall_time_s", "stopped_early", ...}
    results: dict | None = None  # split -> scalar metrics at the end
    prompt: dict | None = None  # lmforge prompt: how the run prompted
    export: dict | None = None  # lmforge export: what made this folder from which run
    quantize: str | None = None  # lmforge export: int8 | int4 weights in this folder
    # lmforge train --from RUN: {"parent", "method", "stage", "stages" (the lineage: each stage's run,
    # data and labels), "metric", "matrix", "baseline", "average", "bwt", "fwt", "replay", ...}
    continual: dict | None = None
    record_version: int = RECORD_VERSION

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def is_prompt_run(self) -> bool:
        return self.model.family == "prompt"

    @property
    def label_names(self) -> list[str]:
        return list((self.labels or {}).get("names", []))

    @property
    def options(self) -> dict:
        """The task's head options ({} when the task keeps none)."""
        return dict(self.head_options or {})

    @classmethod
    def from_dict(cls, data: dict) -> "RunRecord":
        """A record from its JSON form (already migrated to this version)."""
        return cls.model_validate(data)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["model"] = self.model.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)


def migrate(data: dict, folder: Path | None = None) -> dict:
    """Bring the JSON form of a record of any earlier version up to ``RECORD_VERSION``."""
    version = data.get("record_version", 1)
    if not isinstance(version, int) or version < 1:
        raise RunFolderError(f"{folder or 'lmforge.json'}: record_version {version!r} is not a version")
    if version > RECORD_VERSION:
        raise RunFolderError(
            f"{folder or 'lmforge.json'}: written by a newer lmforge (record version {version}; this one "
            f"reads up to {RECORD_VERSION}): upgrade lmforge to read it"
        )
    data = dict(data)
    if version == 1:
        data = _from_v1(data, folder)
    if data["record_version"] == 2:
        data["record_version"] = 3  # version 3 added the optional ``continual``
    return data


def _from_v1(data: dict, folder: Path | None) -> dict:
    if "task" not in data:
        raise RunFolderError(f"{folder or 'lmforge.json'}: no task recorded; not an lmforge run record")
    data.setdefault("head", TASK_HEADS.get(data["task"], data["task"]))
    if "max_length" not in data:
        data["max_length"] = _configured_max_length(folder)
    model = data.get("model")
    data["model"] = dict(model) if isinstance(model, dict) else {}
    data["record_version"] = 2
    return data


def _configured_max_length(folder: Path | None) -> int:
    """The input length the run's own resolved config set (the schema default if it set none)."""
    config = folder / "config.yaml" if folder is not None else None
    if config is not None and config.is_file():
        try:
            resolved = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            resolved = {}
        for section in ("data", "train"):
            value = (resolved.get(section) or {}).get("max_length")
            if isinstance(value, int):
                return value
    return DEFAULT_MAX_LENGTH


def read_record(folder: Path) -> RunRecord:
    """The record of the run folder ``folder``, migrated to this version."""
    path = folder / RECORD_FILE
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder")
    if not path.is_file():
        raise RunFolderError(f"{folder}: not a finished lmforge run (no {RECORD_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: unreadable ({exc.msg})") from None
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: not a JSON object")
    try:
        return RunRecord.from_dict(migrate(data, folder))
    except ValidationError as exc:  # a key of the wrong shape
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RunFolderError(f"{path}: not a valid run record ({where}: {first['msg']})") from None


def record_text(record: RunRecord) -> str:
    """The file's text for ``record`` (what ``RunFolder.write_record`` writes atomically)."""
    return record.to_json()
