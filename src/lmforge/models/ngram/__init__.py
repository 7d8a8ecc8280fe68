"""The n-gram family: models that learn in one pass over the data, on scikit-learn and
python-crfsuite, with no weights to download and no tokenizer to train.

- classification: TF-IDF word and character n-grams with logistic regression, or NB-SVM
  (``model.classifier``);
- token_classification: a feature-based linear-chain CRF;
- causal_lm: an interpolated Kneser-Ney n-gram language model over words or characters.

Each head's model follows the one-pass protocol (``lmforge.models.one_pass``); saved folders hold
JSON, safetensors and crfsuite's model file, never a pickle.
"""

from pathlib import Path

from lmforge.config.model_spec import NgramSpec
from lmforge.errors import ModelError
from lmforge.models.family import FAMILIES, LoadedModel, ModelFamily
from lmforge.models.ngram.classifier import NgramClassifier
from lmforge.models.ngram.language_model import NgramLanguageModel
from lmforge.models.ngram.tagger import NgramTagger
from lmforge.tracking.run_record import RunRecord

HEADS = {
    "sequence_classification": NgramClassifier,
    "token_classification": NgramTagger,
    "causal_lm": NgramLanguageModel,
}


def _head_class(head: str):
    if head not in HEADS:
        raise ModelError(
            f"the ngram family has no '{head}' head: it does classification, token_classification and causal_lm"
        )
    return HEADS[head]


def _info(head: str) -> dict:
    kind = {"sequence_classification": "linear", "token_classification": "crf", "causal_lm": "kneser_ney"}[head]
    return {"family": "ngram", "source": "scratch", "arch": kind, "one_pass": True}


def load_ngram(
    spec: NgramSpec,
    head: str,
    labels: list[str],
    texts: list[str],
    dropout: float | None = None,
    tokenizer_folder: Path | None = None,
) -> LoadedModel:
    return LoadedModel(_head_class(head).from_spec(spec, labels), None, _info(head))


def load_saved_ngram(folder: Path, record: RunRecord) -> LoadedModel:
    return LoadedModel(_head_class(record.head).load(folder), None, record.model.to_dict() or _info(record.head))


FAMILIES.register("ngram", ModelFamily(load_ngram, load_saved_ngram))
