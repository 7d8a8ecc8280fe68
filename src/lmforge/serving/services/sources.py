"""What a source on the ``serve`` command line names, from its files alone (no weights loaded): its
served name, its ensemble members, and the kind of model it serves as.

A classification run classifies, a token-classification run tags entities, a causal or seq2seq LM
generates, and an encoder (``minilm``, a masked-LM run, a model folder that does not generate)
embeds.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import ModelError
from lmforge.inference.llama_cpp import find_gguf
from lmforge.models.transformer import resolve_source
from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_record import RunRecord

KIND_OF_TASK = {
    "classification": "classification",
    "token_classification": "token_classification",
    "causal_lm": "generation",
    "seq2seq": "generation",
    "masked_lm": "embeddings",
}


@dataclass
class Source:
    kind: str
    """classification, token_classification, generation or embeddings"""
    folder: Path | None
    record: RunRecord | None
    """the run's record (``lmforge.json``); None for a model folder or alias"""


def split_source(text: str) -> tuple[str, str]:
    """``name=source`` or ``source`` (named after the folder or alias; an ensemble ``RUN1+RUN2``
    after its members' folders, joined by ``+``)."""
    if "=" in text and not Path(text).exists():
        name, source = text.split("=", 1)
        if name and source:
            return name, source
    members = ensemble_members(text)
    if len(members) > 1:
        return "+".join(Path(m.rstrip("/")).name for m in members), text
    return Path(text.rstrip("/")).name or text, text


def ensemble_members(source: str) -> list[str]:
    """The runs of an ensemble source ``RUN1+RUN2[+...]`` (one served model whose probabilities are
    the members' mean, as ``lmforge predict RUN1 --ensemble RUN2``); ``[source]`` for anything else,
    including a folder whose name holds a ``+``."""
    if "+" not in source or Path(source).exists():
        return [source]
    members = source.split("+")
    if not all(members):
        raise ModelError(f"{source}: an ensemble is RUN1+RUN2[+...], with no empty member")
    return members


def probe(source: str, checkpoint: str) -> Source:
    """What ``source`` serves as; a ``ModelError`` naming it when it cannot be served."""
    members = ensemble_members(source)
    if len(members) > 1:
        return _probe_ensemble(source, members, checkpoint)
    path = Path(source).expanduser()
    if (path / "lmforge.json").is_file():
        run = RunFolder(path)
        record = run.read_record()
        if record.is_prompt_run:
            raise ModelError(
                f"{source}: a prompt run (lmforge prompt) has no trained model; serve its "
                f"model, {record.model.source}, instead"
            )
        if record.task not in KIND_OF_TASK:
            raise ModelError(f"{source}: a {record.task} run, which the server cannot serve")
        return Source(KIND_OF_TASK[record.task], run.model_dir(checkpoint), record)
    gguf = find_gguf(source)
    if gguf is not None:  # served by llama.cpp, or by PyTorch from the weights transformers reads from it
        return Source("generation", gguf.parent, None)
    folder, _ = resolve_source(source)
    config = json.loads((folder / "config.json").read_text())
    architectures = " ".join(config.get("architectures") or [])
    generative = config.get("is_encoder_decoder") or "CausalLM" in architectures or "LMHead" in architectures
    return Source("generation" if generative else "embeddings", folder, None)


def _probe_ensemble(source: str, members: list[str], checkpoint: str) -> Source:
    """Members must all classify or all tag, with the same labels; the ensemble serves as the first."""
    probes = [probe(m, checkpoint) for m in members]
    tasks = [p.record.task if p.record else "a model folder" for p in probes]
    if any(p.kind not in ("classification", "token_classification") for p in probes) or len(set(tasks)) > 1:
        raise ModelError(
            f"{source}: an ensemble's members must all be classification or all "
            f"token_classification runs (these are: {', '.join(tasks)})"
        )
    labels = [sorted(p.record.label_names if p.record else []) for p in probes]
    for member, names in zip(members[1:], labels[1:]):
        if names != labels[0]:
            raise ModelError(
                f"{member}: its labels are not those of {members[0]}; an ensemble's members predict the same labels"
            )
    return probes[0]
