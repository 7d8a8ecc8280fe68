"""The ``model`` section given as a spec: one typed spec per model family, told apart by ``family``.

``model: minilm`` (a bundled alias or a folder) is a transformer; ``model: {family: lstm, ...}``
is validated as that family's spec, so a setting another family reads is an error that names the
key and the family. A dict without ``family`` is a transformer spec.

The specs live here, in the config layer, because the config is read before any model code is
imported; each family's module (``lmforge.models.<family>``) reads only its own spec.
"""

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from lmforge.config.section import Section

DEFAULT_FAMILY = "transformer"


class ModelSpec(Section):
    """What every model spec has: the family that builds it. Each family's spec adds its settings."""

    family: str = Field(DEFAULT_FAMILY, description="model family: transformer | lstm | ngram")


class TransformerSpec(ModelSpec):
    """A transformer: a pretrained model (``path``) or one built from scratch (``arch`` and sizes)."""

    family: Literal["transformer"] = Field("transformer", description="any Hugging Face architecture (the default)")
    path: str | None = Field(None, description="bundled alias or local folder to start from (none: from scratch)")
    extend_vocab: bool = Field(
        False, description="pretrained WordPiece: add the training texts' unknown characters to the vocabulary"
    )
    arch: str | None = Field(
        None, description="from scratch: bert | llama | gpt2 | t5 (default: bert; llama for causal_lm; t5 for seq2seq)"
    )
    layers: int = Field(2, ge=1, description="from scratch: number of layers")
    hidden: int = Field(64, ge=8, description="from scratch: hidden width")
    heads: int = Field(2, ge=1, description="from scratch: attention heads")
    intermediate: int | None = Field(None, ge=8, description="from scratch: feed-forward width (default 4*hidden)")
    max_position: int = Field(512, ge=16, description="from scratch: longest sequence the model accepts")
    vocab_size: int = Field(8000, ge=100, description="from scratch: tokenizer vocabulary size to train")
    lowercase: bool = Field(True, description="from scratch: lowercase text in the trained tokenizer")

    @model_validator(mode="after")
    def _heads_divide_hidden(self):
        if self.path is None and self.hidden % self.heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be a multiple of model.heads ({self.heads})")
        return self


Segmenter = Literal["jieba", "thulac"]


class LstmSpec(ModelSpec):
    """An LSTM built from scratch: a BiLSTM classifier or tagger, or an LSTM language model."""

    family: Literal["lstm"] = Field("lstm", description="an LSTM built from scratch")
    layers: int = Field(2, ge=1, description="number of LSTM layers")
    hidden: int = Field(64, ge=8, description="hidden width (per direction)")
    embedding: int = Field(128, ge=8, description="token embedding width")
    vocab_size: int = Field(8000, ge=100, description="tokenizer vocabulary size to train")
    lowercase: bool = Field(True, description="lowercase text in the trained tokenizer")
    tie_embeddings: bool = Field(
        True, description="causal_lm: the output layer shares the input embeddings (projected if widths differ)"
    )
    bigram_buckets: int = Field(
        0, ge=0, description="hashed embeddings of each token's left and right bigram (0: off; e.g. 200000)"
    )
    char_cnn: int = Field(
        0,
        ge=0,
        description="classifiers/taggers: filters of a character CNN over each token, added to its embedding (0: off; e.g. 30)",
    )
    lexicon: str | None = Field(
        None,
        description="classifiers/taggers: word list whose matches mark each character's place in a word (B/M/E/S) and the word's tag; 'jieba': jieba's dictionary",
    )
    segmenter: Segmenter | list[Segmenter] | None = Field(
        None,
        description="classifiers/taggers: each character's place in the word a Chinese part-of-speech segmenter cuts (B/M/E/S) and the word's tag, beside its embedding: 'jieba', 'thulac' (pip install thulac), or a list of both",
    )
    char_vectors: str | list[str] | None = Field(
        None,
        description="classifiers/taggers: fixed pretrained vectors beside each token's embedding (a list: side by side): a word2vec text file, a .gguf file or model folder (its input embeddings), 'gemma3-270m' (if installed), or 'jieba' (its part-of-speech HMM's character tables)",
    )
    embedding_init: str | None = Field(
        None,
        description="classifiers/taggers: start the token (and bigram) embeddings from pretrained vectors, PCA-reduced to model.embedding; sources as for char_vectors",
    )

    @model_validator(mode="after")
    def _segmenters_once(self):
        if isinstance(self.segmenter, list) and len(set(self.segmenter)) != len(self.segmenter):
            raise ValueError("model.segmenter: a segmenter is named twice")
        return self


class NgramSpec(ModelSpec):
    """Models that learn in one pass: a linear classifier, a CRF tagger or a Kneser-Ney language model."""

    family: Literal["ngram"] = Field("ngram", description="n-gram models that learn in one pass over the data")
    lowercase: bool = Field(True, description="classification: lowercase text before counting n-grams")
    classifier: Literal["logreg", "nbsvm"] = Field(
        "logreg", description="classification: logreg (TF-IDF + logistic regression) | nbsvm (NB-SVM)"
    )
    word_ngrams: tuple[int, int] | None = Field(
        (1, 2), description="classification: [min, max] word n-gram lengths (null: no word n-grams)"
    )
    char_ngrams: tuple[int, int] | None = Field(
        (2, 5), description="classification: [min, max] character n-gram lengths, inside words (null: none)"
    )
    min_df: int = Field(
        2, ge=1, description="keep n-grams found in at least N texts (token_classification: features seen N times)"
    )
    max_features: int | None = Field(
        None, ge=1, description="classification: keep the N most frequent n-grams of each kind"
    )
    C: float = Field(1.0, gt=0, description="classification: inverse L2 regularisation strength of the linear model")
    c1: float = Field(0.1, ge=0, description="token_classification: L1 regularisation of the CRF")
    c2: float = Field(0.05, ge=0, description="token_classification: L2 regularisation of the CRF")
    max_iterations: int = Field(100, ge=1, description="token_classification: L-BFGS iterations of the CRF")
    window: int = Field(
        2, ge=0, le=5, description="token_classification: neighbours each side that a word's features describe"
    )
    unit: Literal["word", "char"] = Field("word", description="causal_lm: model words or characters")
    order: int = Field(3, ge=1, le=12, description="causal_lm: n-gram order (3: trigrams)")
    discount: float | None = Field(
        None, gt=0, le=1, description="causal_lm: one Kneser-Ney discount for all (null: modified KN, three per order)"
    )
    min_count: int = Field(1, ge=1, description="causal_lm: tokens seen fewer than N times become <unk>")

    @model_validator(mode="after")
    def _ngram_ranges(self):
        for key in ("word_ngrams", "char_ngrams"):
            value = getattr(self, key)
            if value is not None and not 1 <= value[0] <= value[1]:
                raise ValueError(f"model.{key}: {list(value)} must be [min, max] with 1 <= min <= max")
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ValueError("model.word_ngrams and model.char_ngrams cannot both be null")
        return self


# family name -> its spec; the loader and the config reference read this table.
MODEL_SPECS: dict[str, type[ModelSpec]] = {"transformer": TransformerSpec, "lstm": LstmSpec, "ngram": NgramSpec}
UNKNOWN_FAMILY = "model_family"  # the error type of a ``family`` no spec has


def _family_of(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("family", DEFAULT_FAMILY)
    return value.family if isinstance(value, ModelSpec) else None


AnyModelSpec = Annotated[
    Annotated[TransformerSpec, Tag("transformer")]
    | Annotated[LstmSpec, Tag("lstm")]
    | Annotated[NgramSpec, Tag("ngram")],
    Discriminator(
        _family_of,
        custom_error_type=UNKNOWN_FAMILY,
        custom_error_message=f"model.family: unknown model family (known: {', '.join(MODEL_SPECS)})",
    ),
]


def as_spec(model: str | ModelSpec) -> ModelSpec:
    """A bare string is an alias or a folder of the transformer family."""
    return TransformerSpec(path=model) if isinstance(model, str) else model


# Every key of the one flat spec that config.yaml files written before per-family specs spell out.
_FLAT_KEYS = frozenset(
    "family path arch layers hidden embedding bigram_buckets tie_embeddings char_cnn lexicon segmenter "
    "char_vectors embedding_init heads intermediate vocab_size max_position lowercase extend_vocab classifier "
    "word_ngrams char_ngrams min_df max_features C c1 c2 max_iterations window unit order discount min_count".split()
)


def migrate_flat_spec(value: Any) -> Any:
    """A run folder's ``config.yaml`` from before per-family specs holds every family's keys (the
    others' at their defaults): keep only its own family's. A spec a user wrote is left alone."""
    if not isinstance(value, dict) or not _FLAT_KEYS <= set(value):
        return value
    spec = MODEL_SPECS.get(value.get("family", DEFAULT_FAMILY))
    return value if spec is None else {k: v for k, v in value.items() if k in spec.model_fields}
