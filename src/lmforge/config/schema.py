"""The job config: one typed model per section, a one-line doc per field.

Defaults live here; YAML only overrides them. Unknown keys and wrong types are errors (the loader
turns pydantic's report into one line naming the file and key).
"""

import logging
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lmforge.config.model_spec import AnyModelSpec, LstmSpec, ModelSpec, NgramSpec, TransformerSpec, migrate_flat_spec
from lmforge.config.section import Section

Tracker = Literal["tensorboard", "wandb", "mlflow"]

log = logging.getLogger("lmforge")


class Fields(Section):
    """Which column or key of the user's data holds what (a name, or a 0-based column index)."""

    text: str | int = Field("text", description="column with the input text")
    text_pair: str | int | None = Field(None, description="second text for sentence-pair tasks")
    label: str | int = Field("label", description="column with the label")
    source: str | int = Field("source", description="seq2seq: column with the input text")
    target: str | int = Field("target", description="seq2seq: column with the output text")
    tokens: str = Field("tokens", description="token_classification jsonl: key with the list of tokens")
    tags: str = Field("tags", description="token_classification jsonl: key with the list of tags")
    entities: str = Field(
        "entities", description="token_classification jsonl: key with [{start, end, label}] spans of text"
    )
    token_column: int = Field(0, description="CoNLL files: column with the token (0-based)")
    tag_column: int = Field(-1, description="CoNLL files: column with the tag (0-based; -1: last)")


class DataSource(Section):
    """One data file (or folder) with optional per-file reading options."""

    path: str = Field(description="file or folder; 'package:NAME/...' points into an installed package")
    fields: Fields | None = Field(None, description="column names for this file (default: data.fields)")
    format: str | None = Field(None, description="reader to use (default: from the file suffix)")
    header: bool | None = Field(None, description="csv/tsv: first row is a header (default: detect)")
    label: str | None = Field(None, description="one label for every row of this file (pos.txt -> positive)")
    offset: int = Field(0, ge=0, description="skip this many rows at the start of this file")
    limit: int | None = Field(None, ge=1, description="read at most N rows of this file (after offset)")
    incomplete_types: list[str] = Field(
        default_factory=list,
        description="token_classification training data that marks these entity types "
        "only in part: its O tokens may be them, and training sums over both (partial labels)",
    )


Sources = str | DataSource | list[str | DataSource]


class AugmentStep(Section):
    """One augmentation of ``data.augment``: each makes ``copies`` changed versions of every training
    example, anew each epoch (seeded by train.seed and the epoch)."""

    method: Literal["synonym", "insert", "swap", "delete", "mention", "contextual", "paraphrase"] = Field(
        description="synonym | insert | swap | delete (token operations, EDA) | mention (NER: swap in an "
        "entity of the same type) | contextual (a masked LM fills masked words) | paraphrase (a generative model)"
    )
    p: float = Field(0.1, gt=0, le=1, description="share of the words an operation changes (at least one)")
    copies: int = Field(1, ge=1, le=16, description="changed versions of each example per epoch")
    source: str = Field(
        "auto",
        description="synonyms: 'auto' (wordnet for English, cilin for Chinese), wordnet, cilin, embedding "
        "(neighbours in the model's own input embeddings) or a file: one line of synonyms a group",
    )
    model: str | None = Field(
        None,
        description="contextual: a masked LM (folder or run); paraphrase: a causal LM or seq2seq run (default smollm2)",
    )
    language: Literal["auto", "en", "zh"] = Field("auto", description="the texts' language (auto: from the data)")


MaskType = Literal["email", "phone", "cn_id", "bank_card", "ip", "person", "place", "organization"]
Split = Literal["train", "validation", "test"]
ALL_MASK_TYPES: list[MaskType] = ["email", "phone", "cn_id", "bank_card", "ip", "person", "place", "organization"]
ALL_SPLITS: list[Split] = ["train", "validation", "test"]


class MaskConfig(Section):
    """``data.mask``: personal data in the texts replaced by its type (``[EMAIL]``, ``[PERSON]``)
    when the data is read, before anything (a tokenizer built from scratch included) sees it."""

    types: list[MaskType] = Field(
        default_factory=lambda: list(ALL_MASK_TYPES),
        min_length=1,
        description="what to mask: email, phone, cn_id, bank_card, ip (rules); person, place, organization (need ner)",
    )
    ner: str | None = Field(
        None, description="an NER run that finds person, place and organization names (without it those are skipped)"
    )
    splits: list[Split] = Field(default_factory=lambda: list(ALL_SPLITS), min_length=1, description="the splits masked")


class DataConfig(Section):
    """Where the data is and how to read it."""

    train: Sources | None = Field(None, description="training data: a file, a folder, or a list of them")
    validation: Sources | None = Field(None, description="validation data")
    test: Sources | None = Field(None, description="test data, evaluated once at the end")
    split: float | None = Field(
        None, gt=0, lt=1, description="hold out this fraction of train as validation (seeded, stratified)"
    )
    fields: Fields = Field(default_factory=Fields, description="column names, for every file")
    max_length: int = Field(
        128,
        ge=4,
        description="cut inputs to this many tokens, in training and at inference (the run records it; "
        "train.max_length, its old place, is still read)",
    )
    train_limit: int | None = Field(
        None, ge=1, description="train on N examples only: seeded, class-balanced when examples have labels (few-shot)"
    )
    label_names: list[str] | dict[str, str] | None = Field(
        None, description="names for the raw labels (list: in sorted raw order; mapping: raw -> name)"
    )
    format: str | None = Field(None, description="reader for every file (default: from the suffix)")
    header: bool | None = Field(None, description="csv/tsv: first row is a header (default: detect)")
    encoding: str = Field("utf-8", description="text encoding of the files (a BOM is always dropped)")
    encoding_errors: Literal["strict", "replace", "ignore"] = Field(
        "strict", description="undecodable bytes: stop (strict), or replace/ignore them"
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="a bad row stops with its place named (raise), or is skipped and counted"
    )
    tag_scheme: Literal["auto", "bio", "iob1", "iobes", "bioes"] = Field(
        "auto", description="token_classification: tag scheme of the files (auto: detect from the tags)"
    )
    output_scheme: Literal["bio", "iob1", "iobes", "bioes"] = Field(
        "bio", description="token_classification: tag scheme the model learns and predicts"
    )
    label_all_subwords: bool = Field(
        False, description="token_classification: train on every subword, not only each word's first"
    )
    window_stride: int = Field(
        32, ge=0, description="token_classification: subword overlap of the windows a long sentence is split into"
    )
    whole_word_mask: bool = Field(
        False, description="masked_lm: mask all pieces of a word together (WordPiece tokenizers)"
    )
    template: str | None = Field(
        None,
        description="causal_lm SFT: chat template: 'chatml', a .jinja file or a Jinja string (default: the tokenizer's)",
    )
    train_on_prompt: bool = Field(
        False, description="causal_lm SFT: also train on system/user tokens, not only the assistant's"
    )
    packing: bool = Field(
        True, description="causal_lm SFT: pack conversations into rows of max_length (no padding, no cross-attention)"
    )
    fill: dict[str, str] | None = Field(
        None, description="causal_lm SFT: replace {{key}} placeholders in every message, e.g. {name: Forge}"
    )
    augment: list[AugmentStep] = Field(
        default_factory=list,
        description="classification, token_classification: augmentations applied to the training data each epoch",
    )
    mask: MaskConfig | None = Field(
        None, description="mask personal data in the texts before training (see docs/masking.md); null: off"
    )

    @model_validator(mode="after")
    def _one_validation_source(self):
        if self.split is not None and self.validation is not None:
            raise ValueError("give either data.validation or data.split, not both")
        return self


class TuningConfig(Section):
    """Which parameters train, and how."""

    method: str = Field("full", description="full | freeze | lora | adalora | ia3 | prefix | prompt | ptuning | setfit")
    trainable_layers: int = Field(2, ge=0, description="freeze: how many top encoder layers train (head always trains)")
    r: int = Field(8, ge=1, description="lora: rank (adalora: average rank after pruning from 2r)")
    alpha: float = Field(16, gt=0, description="lora/adalora: scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="lora/adalora: dropout on the adapter input")
    target: str | list[str] = Field("auto", description="lora/adalora/ia3: 'auto', 'all-linear' or module names")
    num_virtual_tokens: int = Field(
        20, ge=1, description="prefix/prompt/ptuning: trained positions added to each sequence"
    )
    encoder_hidden: int = Field(128, ge=8, description="ptuning: hidden width of the prompt encoder MLP")
    pair_iterations: int = Field(
        20,
        ge=1,
        le=1000,
        description="setfit: rounds of pair drawing; each pairs every labelled example with one of its label and "
        "one of another (Tunstall et al. 2022: 20)",
    )
    label_templates: int = Field(
        0,
        ge=0,
        le=1000,
        description="setfit: add this many copies of `template` per label to the labelled examples (SetFit's "
        "templated examples; needs label names that are words, e.g. data.label_names)",
    )
    template: str = Field(
        "This sentence is {label}.", description="setfit: the templated example of a label ({label}: its name)"
    )

    @field_validator("template")
    @classmethod
    def _template_names_the_label(cls, value: str) -> str:
        try:
            filled = value.format(label="\0")
        except (KeyError, IndexError, ValueError):
            filled = ""
        if "\0" not in filled:
            raise ValueError("must contain {label}, where the label's name goes, and no other {...}")
        return value


class HeadConfig(Section):
    """Options of the task head."""

    crf: bool = Field(False, description="token_classification: a CRF layer over the tag scores (Viterbi decoding)")
    decode: Literal["constrained", "argmax"] = Field(
        "constrained",
        description="token_classification without a CRF: constrained = the valid tag sequence of the scheme "
        "(no I-PER after O) with the highest summed log-probability (Viterbi over the softmax) | "
        "argmax = each word's most likely tag, invalid sequences repaired when read as entities",
    )


class EarlyStopping(Section):
    """Stop when a validation metric stops improving."""

    metric: str | None = Field(
        None, description="any metric evaluation reports, or 'loss' (default: the task's main metric)"
    )
    mode: Literal["max", "min"] | None = Field(None, description="max or min (default: min for loss, else max)")
    patience: int = Field(2, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")


class AdversarialConfig(Section):
    """Adversarial training: each batch's loss also on perturbed input embeddings (training/adversarial.py)."""

    method: Literal["fgm", "pgd", "freelb"] = Field(
        description="fgm (one step, Miyato et al. 2017) | pgd (projected steps, Madry et al. 2018) | "
        "freelb (gradients of every step averaged, Zhu et al. 2020)"
    )
    epsilon: float = Field(
        0.1,
        gt=0,
        description="largest L2 norm of one example's perturbation, all its tokens together (MiniLM's token embeddings: norm ~1)",
    )
    alpha: float | None = Field(
        None, gt=0, description="pgd, freelb: L2 size of each ascent step (default: epsilon / steps)"
    )
    steps: int = Field(3, ge=1, description="pgd, freelb: ascent steps per batch (fgm takes one)")

    @model_validator(mode="after")
    def _fgm_takes_one_step(self):
        given = sorted({"alpha", "steps"} & self.model_fields_set)
        if self.method == "fgm" and given:
            raise ValueError(
                f"train.adversarial.{given[0]}: fgm takes one step of size epsilon; "
                f"{given[0]} applies to pgd and freelb"
            )
        return self


class TrainConfig(Section):
    """The optimisation loop."""

    epochs: int = Field(3, ge=1, description="passes over the training data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    lr: float = Field(5e-5, gt=0, description="peak learning rate (AdamW)")
    batch_size: int = Field(32, ge=1, description="examples per micro-batch (per process)")
    eval_batch_size: int | None = Field(None, ge=1, description="examples per evaluation batch (default 2*batch_size)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    warmup: float = Field(0.06, ge=0, description="warm-up: fraction of steps if < 1, else a step count")
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="decay after warm-up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and norms)")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm (null: no clipping)")
    max_target_length: int = Field(128, ge=2, description="seq2seq: truncate targets to this many tokens")
    dropout: float | None = Field(None, ge=0, lt=1, description="override every dropout rate of the model")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy")
    ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="average the weights over steps with this decay (e.g. 0.999); evaluate and save the average",
    )
    class_weights: Literal["balanced"] | list[float] | None = Field(
        None, description="'balanced' (inverse frequency) or one weight per label"
    )
    adversarial: AdversarialConfig | None = Field(
        None,
        description="adversarial training on the input embeddings: {method: fgm|pgd|freelb, epsilon, alpha, steps}",
    )
    rdrop: float = Field(
        0.0,
        ge=0,
        description="R-Drop (Liang et al. 2021): weight of the symmetric KL between two dropout passes (0: off)",
    )
    seed: int = Field(42, description="seed for initialisation, data order and dropout")
    eval_every: Literal["epoch"] | int = Field("epoch", description="'epoch' or every N optimizer steps")
    save_every: int | None = Field(
        None, ge=1, description="also checkpoint every N steps (default: at each evaluation)"
    )
    keep_checkpoints: int = Field(2, ge=1, description="how many checkpoints to keep")
    keep_optimizer: bool = Field(
        False,
        description="keep the optimizer's state in the checkpoints after the run ends (to continue it exactly); "
        "dropped by default: it is twice the model's size",
    )
    early_stopping: EarlyStopping | None = Field(None, description="stop when a metric stops improving")
    group_by_length: bool = Field(True, description="batch texts of similar length together (less padding)")
    padding_free: Literal["auto"] | bool = Field(
        "auto",
        description="train on packed rows, no padding (BERT-style encoders, classification and NER); auto: "
        "where the model takes them and they pay, true: always (refuse a model that cannot), false: never",
    )
    log_every: int = Field(10, ge=1, description="log the training loss every N steps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto (bf16 or fp16 autocast where the hardware computes it natively and a measured step is "
        "faster, else fp32) | fp32 | bf16 | fp16 (CUDA, with loss scaling)",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, about a third more time"
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (default: the machine's cores)")

    @model_validator(mode="before")
    @classmethod
    def _mixed_precision_renamed(cls, data):
        """``train.mixed_precision`` (no | bf16 | fp16) was the setting's name before 0.3; it is still
        read, with a note."""
        if not isinstance(data, dict) or "mixed_precision" not in data:
            return data
        data = dict(data)
        old = data.pop("mixed_precision")
        value = {"no": "fp32"}.get(old, old)
        if "precision" in data and data["precision"] != value:
            raise ValueError(
                f"train.mixed_precision ({old}) and train.precision ({data['precision']}) disagree: "
                "mixed_precision is the old name of precision; keep train.precision only"
            )
        log.warning("train.mixed_precision is deprecated: it is train.precision now (no -> fp32)")
        return {**data, "precision": value}

    @field_validator("ema", mode="before")
    @classmethod
    def _ema_is_a_decay(cls, value):
        if isinstance(value, bool):  # YAML's true would pass as 1.0 and fail as "less than 1"
            raise ValueError(f"give the averaging decay, e.g. 0.999 (null: off), not {str(value).lower()}")
        return value

    @field_validator("eval_every")
    @classmethod
    def _positive(cls, value):
        if isinstance(value, int) and value < 1:
            raise ValueError("eval_every must be 'epoch' or a positive step count")
        return value


class DistributedConfig(Section):
    """Training over several processes (``torchrun``, ``accelerate launch`` or ``lmforge train
    --processes N``), handed to Hugging Face Accelerate; a single process ignores it."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description="ddp (a full copy per process) | fsdp (shard weights, gradients, optimizer) | deepspeed (ZeRO)",
    )
    zero_stage: Literal[2, 3] = Field(
        2, description="deepspeed: ZeRO stage (2 shards gradients and optimizer, 3 also weights)"
    )
    offload: bool = Field(False, description="fsdp, deepspeed: keep parameters/optimizer state in CPU memory")
    min_params: int = Field(
        100_000, ge=1, description="fsdp: wrap each submodule with at least this many parameters as one shard unit"
    )
    embedding_rows: Literal["auto", "always", "never"] = Field(
        "auto",
        description="ddp: all-reduce embedding gradients over the rows each step used, not whole: auto "
        "(tables of 4,096 rows or more) | always | never",
    )
    gradient_compression: Literal["none", "fp16", "bf16", "powersgd"] = Field(
        "none",
        description="ddp: all-reduce gradients exact (none), rounded to fp16 or bf16 (half the bytes; bf16 on "
        "CUDA only), or low-rank (powersgd, after powersgd_start exact steps); torch's DDP communication hooks",
    )
    powersgd_rank: int = Field(2, ge=1, description="gradient_compression: powersgd: the rank of the approximation")
    powersgd_start: int = Field(
        1000,
        ge=2,
        description="gradient_compression: powersgd: all-reduces sent exact before compression starts (torch's default)",
    )

    @model_validator(mode="after")
    def _compression_is_ddp(self):
        if self.gradient_compression != "none" and self.strategy != "ddp":
            raise ValueError(
                f"gradient_compression: {self.gradient_compression} needs strategy: ddp "
                f"({self.strategy} reduces gradients itself)"
            )
        return self


class SearchRange(Section):
    """A numeric range of ``tune.space``: integers when ``low`` and ``high`` are both integers."""

    low: int | float = Field(description="smallest value")
    high: int | float = Field(description="largest value")
    log: bool = Field(False, description="sample on a log scale (learning rates)")
    step: float | None = Field(None, gt=0, description="only multiples of step above low")


class TuneConfig(Section):
    """``lmforge tune``: a hyperparameter search with Optuna over any config keys."""

    space: dict[str, SearchRange | list] = Field(
        default_factory=dict,
        description="config key -> {low, high, log, step} or a list of choices, e.g. train.lr: {low: 1.0e-5, high: 1.0e-3, log: true}",
    )
    metric: str | None = Field(None, description="validation metric to optimise (default: the task's main metric)")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: minimize for loss and perplexity, else maximize"
    )
    sampler: Literal["tpe", "random", "grid", "cmaes"] = Field("tpe", description="how trials choose values")
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="stop unpromising trials at their evaluations (train.eval_every)"
    )
    command: Literal["train", "prompt"] = Field(
        "train", description="what a trial runs: train, or prompt (no training)"
    )
    output: str | None = Field(None, description="the study folder (default: output + '-tune')")

    @field_validator("space", mode="before")
    @classmethod
    def _ranges_or_choices(cls, space):
        if isinstance(space, dict):
            for key, value in space.items():
                if not isinstance(value, (dict, list)):
                    raise ValueError(
                        f"{key}: give a list of choices ([16, 32]) or a range ({{low: 1.0e-5, high: 1.0e-3}}), "
                        f"not {value!r}"
                    )
        return space

    storage: str | None = Field(
        None,
        description="SQLAlchemy URL of the study (default: study.db in the study folder); "
        "or set LMFORGE_TUNE_STORAGE, which keeps a password off the command line",
    )
    seed: int = Field(0, description="seed of the sampler")


class PromptConfig(Section):
    """``lmforge prompt``: classify without training, by a causal LM's label likelihoods (zero- or
    few-shot) or by an encoder's similarity to label descriptions; tag entities by asking a causal
    LM to list them (token_classification); answer seq2seq sources or instructions (causal_lm) and
    score the replies with BLEU/ROUGE."""

    model: str = Field("smollm2", description="causal LM (likelihood) or encoder (similarity): alias or folder")
    engine: Literal["auto", "torch", "llama_cpp"] = Field(
        "torch", description="causal LMs: torch (float32) | llama_cpp (GGUF models) | auto (llama.cpp for GGUF models)"
    )
    method: Literal["likelihood", "similarity"] = Field("likelihood", description="likelihood | similarity")
    shots: int = Field(0, ge=0, description="in-context examples per text (likelihood)")
    selection: Literal["random", "balanced", "nearest"] = Field(
        "balanced", description="how examples are chosen: random | balanced (per class) | nearest (MiniLM)"
    )
    seed: int = Field(0, description="seed of the example choice and order")
    verbalizers: dict[str, str] | list[str] | None = Field(
        None, description="answer text per label (by name or id); default: the label names"
    )
    instruction: str | None = Field(None, description="instruction; {answers} lists the verbalizers")
    text_format: str | None = Field(None, description="how a text is shown; {text} is replaced")
    language: Literal["auto", "en", "zh"] = Field("auto", description="default templates' language")
    calibrate: bool = Field(True, description="also report contextual calibration (content-free prior)")
    normalize: Literal["mean", "sum"] = Field("mean", description="verbalizer log-likelihood per token or summed")
    limit: int | None = Field(None, ge=1, description="classify a seeded sample of N evaluation rows (file order kept)")
    batch_size: int = Field(8, ge=1, description="prompts scored together")
    max_chars: int = Field(1500, ge=16, description="texts and examples are cut to this many characters")
    max_new_tokens: int = Field(
        64, ge=1, le=2048, description="generation and token_classification: most tokens of a reply"
    )


class DistilConfig(Section):
    """``lmforge distil``: knowledge distillation from a fine-tuned teacher run (Hinton et al. 2015)."""

    temperature: float = Field(
        2.0, gt=0, description="softmax temperature of teacher and student in the distillation term"
    )
    alpha: float = Field(
        0.5, ge=0, le=1, description="weight of the distillation term; 1 - alpha weighs cross-entropy on the labels"
    )
    teacher_batch_size: int = Field(
        64, ge=1, description="texts per batch when the teacher's logits are computed (once, cached)"
    )


class ContinualConfig(Section):
    """Continual learning (``lmforge train CONFIG --from RUN``): continue a finished run on new data or
    a new task, keeping what it learnt (training/continual/; docs/continual.md)."""

    parent: str | None = Field(
        None, description="the run folder to continue (the model, tokenizer and head come from it); --from RUN"
    )
    checkpoint: Literal["auto", "best", "model"] = Field(
        "auto", description="which of the parent's saved models to start from (auto: best if present)"
    )
    method: str = Field(
        "none",
        description="none (naive fine-tuning) | replay (mix in earlier stages' examples) | ewc (Kirkpatrick et al. "
        "2017) | l2sp (Li et al. 2018) | lora_per_task (a LoRA adapter per stage over the frozen base)",
    )
    replay_size: int | None = Field(
        None, ge=1, description="replay: earlier stages' training examples mixed in (split evenly over the stages)"
    )
    replay_ratio: float | None = Field(
        None,
        gt=0,
        description="replay: as many earlier examples as this fraction of the new training set (default 0.25)",
    )
    ewc_lambda: float = Field(
        1.0e6, ge=0, description="ewc: weight lambda of the penalty lambda/2 * sum F (theta - theta*)^2"
    )
    fisher_samples: int = Field(
        512, ge=1, description="ewc: training examples of the previous stage the diagonal Fisher is estimated on"
    )
    fisher_batch_size: int = Field(
        16,
        ge=1,
        description="ewc: examples per gradient of the Fisher estimate (1: exact, per example; B: B x the squared "
        "batch gradient, about B times faster and noisier)",
    )
    l2sp_alpha: float = Field(
        0.1, ge=0, description="l2sp: weight alpha of alpha/2 * ||w - w_parent||^2 on the weights the parent had"
    )
    l2sp_beta: float = Field(
        0.01, ge=0, description="l2sp: weight beta of beta/2 * ||w||^2 on new weights (the rows of new labels)"
    )
    metric: str | None = Field(
        None,
        description="the metric of the stage matrix (default: accuracy for classification, f1 for NER, "
        "perplexity for language models)",
    )

    @model_validator(mode="after")
    def _one_replay_size(self):
        if self.replay_size is not None and self.replay_ratio is not None:
            raise ValueError("give replay_size or replay_ratio, not both")
        if self.method != "none" and self.parent is None:
            raise ValueError(
                f"continual.method: {self.method} needs continual.parent (lmforge train CONFIG --from RUN)"
            )
        return self


class JobConfig(Section):
    """A whole job: task, data, model, tuning, training and output folder."""

    task: str = Field(
        "classification", description="classification | token_classification | masked_lm | causal_lm | seq2seq"
    )
    data: DataConfig = Field(default_factory=DataConfig, description="the data")
    model: str | AnyModelSpec = Field(
        "minilm", description="bundled alias or local folder (a transformer), or a spec {family: ..., ...}"
    )
    head: HeadConfig = Field(default_factory=HeadConfig, description="options of the task head")
    tuning: TuningConfig = Field(default_factory=TuningConfig, description="how parameters are tuned")
    train: TrainConfig = Field(default_factory=TrainConfig, description="the training loop")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="lmforge prompt: zero/few-shot, no training")
    distil: DistilConfig = Field(default_factory=DistilConfig, description="lmforge distil: knowledge distillation")
    continual: ContinualConfig = Field(
        default_factory=ContinualConfig, description="continual learning: continue a parent run (--from RUN)"
    )
    tune: TuneConfig = Field(default_factory=TuneConfig, description="lmforge tune: the search space and study")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="several processes: strategy (ddp | fsdp | deepspeed)"
    )
    device: str = Field("auto", description="auto (CUDA when there is one) | cpu | cuda | cuda:N")
    tracking: list[Tracker] = Field(
        default_factory=lambda: list[Tracker](["tensorboard"]),
        description="where metrics go besides metrics.jsonl: tensorboard (events/), wandb (Weights & Biases; "
        "offline unless WANDB_MODE says otherwise), mlflow (MLFLOW_TRACKING_URI, else runs' parent/mlflow.db)",
    )
    output: str = Field("runs/run", description="the run folder")
    resume: bool = Field(False, description="continue from the newest complete checkpoint in output")
    overwrite: bool = Field(False, description="replace a different run already in output")

    @field_validator("model", mode="before")
    @classmethod
    def _per_family_spec(cls, value):
        return migrate_flat_spec(value)

    @model_validator(mode="before")
    @classmethod
    def _max_length_moved(cls, data):
        """``train.max_length`` was the input length's place before 0.2: inference cuts inputs the same
        way, so it is ``data.max_length`` now. The old key is still read, with a note."""
        if not isinstance(data, dict) or not isinstance(data.get("train"), dict) or "max_length" not in data["train"]:
            return data
        train = dict(data["train"])
        old = train.pop("max_length")
        section = data.get("data") if isinstance(data.get("data"), dict) else {}
        if "max_length" in section and section["max_length"] != old:
            raise ValueError(
                f"train.max_length ({old}) and data.max_length ({section['max_length']}) disagree: "
                "train.max_length is the old name of data.max_length; keep data.max_length only"
            )
        log.warning("train.max_length is deprecated: it is data.max_length now (the same setting)")
        return {**data, "train": train, "data": {**section, "max_length": old}}

    @model_validator(mode="after")
    def _needs_train(self):
        if self.data.train is None:
            raise ValueError("data.train is required")
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, value):
        if not DEVICE_SPEC.fullmatch(value):
            raise ValueError(device_problem(value))
        return value

    @model_validator(mode="after")
    def _setfit_fits(self):
        """SetFit trains a sentence encoder's text classifier: a transformer, for classification."""
        if self.tuning.method != "setfit":
            return self
        if self.task != "classification":
            raise ValueError(f"tuning.method: setfit trains text classifiers (task: classification), not '{self.task}'")
        family = self.model.family if isinstance(self.model, ModelSpec) else "transformer"
        if family != "transformer":
            raise ValueError(f"tuning.method: setfit fine-tunes a transformer encoder, not the {family} family")
        if self.train.ema is not None:
            raise ValueError("train.ema: setfit fits its head after the contrastive phase; remove train.ema")
        for key, default in SETFIT_UNUSED_TRAIN.items():
            if key != "ema" and getattr(self.train, key) != default:
                raise ValueError(
                    f"train.{key}: setfit trains on pairs of examples and fits its head in closed form, so "
                    f"train.{key} would do nothing; remove it"
                )
        return self


# train.* settings of the cross-entropy loop that SetFit's contrastive pairs and closed-form head have
# no use for, with the values that turn them off (a setfit config must keep these; compare's setfit
# candidates are given them).
SETFIT_UNUSED_TRAIN: dict[str, Any] = {
    "ema": None,
    "adversarial": None,
    "rdrop": 0.0,
    "label_smoothing": 0.0,
    "class_weights": None,
    "early_stopping": None,
}

DEVICE_SPEC = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # the config's `device` and every --device


def device_problem(spec) -> str:
    """What is wrong with a ``device`` that ``DEVICE_SPEC`` does not match."""
    return f"'{spec}' is not one of auto, cpu, cuda, cuda:N (N: a GPU's 0-based index)"


# The model specs are defined in model_spec.py and are part of the schema too.
__all__ = [
    "ContinualConfig",
    "AdversarialConfig",
    "DataConfig",
    "DataSource",
    "DistilConfig",
    "EarlyStopping",
    "Fields",
    "HeadConfig",
    "JobConfig",
    "LstmSpec",
    "ModelSpec",
    "NgramSpec",
    "PromptConfig",
    "Section",
    "Sources",
    "TrainConfig",
    "TransformerSpec",
    "TuningConfig",
]
