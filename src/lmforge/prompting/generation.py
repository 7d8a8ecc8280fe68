"""``lmforge prompt`` on a generation config: zero/few-shot text generation with a causal LM.

Two kinds of config are prompted:

* ``task: seq2seq`` -- rows of ``source`` and ``target`` (summaries, translations, rewrites): the
  model is shown K (source, target) pairs and the source to answer;
* ``task: causal_lm`` with instruction data (alpaca, messages, ShareGPT): each evaluation
  conversation is answered at its last assistant turn, after K other training conversations shown
  as earlier turns. Raw-text (pre-training) data has nothing to answer and is refused.

The model is a causal LM (chat template or plain) or an encoder-decoder (a T5/BART folder or
run), which reads the plain-document prompt and writes the reply.

setup (rows as ``train`` reads them, the template, the examples) -> greedy replies, batched ->
BLEU, ROUGE-1/2/L and exact match against the references (``evaluation/text_overlap``, the
metrics ``lmforge eval --generate`` reports for a trained run) -> ``predictions.jsonl`` with each
prompt's source, reference and reply. The template code has no CLI in it, so the server's
generation endpoints can use it.
"""

import logging
import time
from dataclasses import dataclass

from lmforge.config.schema import JobConfig
from lmforge.data.readers import Problems
from lmforge.errors import ConfigError, DataError
from lmforge.evaluation.text_overlap import generation_metrics
from lmforge.inference.generator import greedy_replies, open_transformer
from lmforge.models.embedding import SentenceEncoder
from lmforge.prompting.selection import fixed_examples, nearest_examples
from lmforge.prompting.splits import evaluation_splits, labelled_pool
from lmforge.prompting.templates import detect_language
from lmforge.runtime import quiet_libraries, set_seed, set_threads
from lmforge.tasks import get_task
from lmforge.tasks.seq2seq import generate_pairs

log = logging.getLogger("lmforge")

DEFAULTS = {
    "en": {"input": "Input:", "output": "Output:"},
    "zh": {"input": "输入：", "output": "输出："},
}


@dataclass
class Shot:
    """One request and its answer: earlier turns (``context``, e.g. a system message or a
    conversation's first exchanges), then the user's last message and the reference reply."""

    context: list[dict]
    request: str
    answer: str
    where: str = ""


def shot_of(example) -> Shot:
    """A seq2seq pair or a conversation (its last assistant turn is the answer) as a ``Shot``."""
    if hasattr(example, "source"):
        return Shot([], example.source, example.target, example.where)
    messages = example.messages
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    users = [i for i in range(last) if messages[i]["role"] == "user"]
    if not users:
        raise DataError(f"{example.where}: the conversation has no user message before its last assistant turn")
    ask = users[-1]
    return Shot([dict(m) for m in messages[:ask]], messages[ask]["content"], messages[last]["content"], example.where)


@dataclass
class GenerationTemplate:
    """How shots and the request become a prompt. Chat models: the instruction as a system turn,
    each shot as a user turn and an assistant turn, the request as the last user turn. Plain LMs:
    one document of ``Input: …`` / ``Output: …`` blocks ending in the output cue; the reply then
    ends at the next blank line or input cue."""

    language: str = "en"
    instruction: str | None = None
    text_format: str | None = None  # "{text}" is replaced by the request
    max_chars: int = 1500

    def __post_init__(self):
        base = DEFAULTS[self.language]
        self.text_format = self.text_format or "{text}"
        self.input_cue, self.output_cue = base["input"], base["output"]

    def _text(self, text: str) -> str:
        return self.text_format.replace("{text}", text[: self.max_chars])

    def messages(self, request: Shot, shots: list[Shot]) -> list[dict]:
        """The system turn first (the instruction, else the request's own), then the shots, then the
        request's earlier turns and the request."""
        own = [m for m in request.context if m["role"] == "system"][:1]
        turns = [{"role": "system", "content": self.instruction}] if self.instruction else [dict(m) for m in own]
        for shot in shots:
            turns += [m for m in shot.context if m["role"] != "system"]
            turns += [
                {"role": "user", "content": self._text(shot.request)},
                {"role": "assistant", "content": shot.answer[: self.max_chars]},
            ]
        turns += [m for m in request.context if m["role"] != "system"]
        return turns + [{"role": "user", "content": self._text(request.request)}]

    def document(self, request: Shot, shots: list[Shot]) -> str:
        """The instruction (else the request's own system turn), then each shot's earlier turns and
        the shot, then the request's earlier turns, as ``Input:``/``Output:`` blocks."""
        own = [m["content"] for m in request.context if m["role"] == "system"][:1]
        blocks = [self.instruction] if self.instruction else own
        for shot in shots:
            blocks += self._turn_blocks(shot.context)
            blocks.append(
                f"{self.input_cue} {self._text(shot.request)}\n{self.output_cue} {shot.answer[: self.max_chars]}"
            )
        blocks += self._turn_blocks(request.context)
        blocks.append(f"{self.input_cue} {self._text(request.request)}\n{self.output_cue}")
        return "\n\n".join(blocks)

    def _turn_blocks(self, context: list[dict]) -> list[str]:
        """A conversation's earlier user and assistant turns as blocks, each user turn with the reply
        that follows it (system turns are placed by ``document``)."""
        blocks, asked = [], None
        for m in context:
            if m["role"] == "user":
                if asked is not None:
                    blocks.append(f"{self.input_cue} {asked}")
                asked = m["content"][: self.max_chars]
            elif m["role"] == "assistant":
                said = f"{self.output_cue} {m['content'][: self.max_chars]}"
                blocks.append(said if asked is None else f"{self.input_cue} {asked}\n{said}")
                asked = None
        if asked is not None:
            blocks.append(f"{self.input_cue} {asked}")
        return blocks

    def cut(self, reply: str) -> str:
        """A plain LM's reply runs on into the next block: it ends at a blank line or input cue."""
        return reply.split("\n\n")[0].split(self.input_cue)[0].strip()


class PromptGenerator:
    """A causal LM, the template and the in-context examples, ready to answer requests."""

    def __init__(self, spec, train: list[Shot], language: str, *, device: str = "auto"):

        if spec.selection == "balanced":
            log.info("prompt.selection: generation examples have no classes; 'balanced' draws them at random")
        self.spec, self.train = spec, train
        self.template = GenerationTemplate(language, spec.instruction, spec.text_format, spec.max_chars)
        self.gen = open_transformer(spec.model, device, spec.engine)
        self.chat = self.gen.has_template and not self.gen.seq2seq
        self.fixed = (
            fixed_examples([0] * len(train), spec.shots, "random", spec.seed) if spec.selection != "nearest" else []
        )
        self.encoder = None
        if spec.shots and spec.selection == "nearest":
            self.encoder = SentenceEncoder("minilm", device=device)
            self.train_vectors = self.encoder.encode([s.request for s in train])

    def details(self) -> dict:
        return {
            "shots": self.spec.shots,
            "selection": self.spec.selection,
            "seed": self.spec.seed,
            "chat_template": self.chat,
            "max_new_tokens": self.spec.max_new_tokens,
            "examples": [self.train[i].where for i in self.fixed],
        }

    def shown(self, requests: list[Shot]) -> list[list[int]]:
        """Indices of the training rows shown with each request (the same for all but ``nearest``)."""

        if self.encoder is None:
            return [self.fixed] * len(requests)
        return nearest_examples(self.encoder.encode([r.request for r in requests]), self.train_vectors, self.spec.shots)

    def prompts(self, requests: list[Shot], per: list[list[int]] | None = None) -> list[list[int]]:
        out = []
        for request, idx in zip(requests, per if per is not None else self.shown(requests)):
            shots = [self.train[i] for i in idx]
            if self.chat:
                out.append(self.gen.encode(self.template.messages(request, shots)))
            else:
                out.append(self.gen.encode(self.template.document(request, shots), raw=True))
        return out

    def replies(self, requests: list[Shot], per: list[list[int]] | None = None) -> list[str]:

        prompts = self.prompts(requests, per)
        if self.gen.seq2seq:  # an encoder-decoder reads the document and writes the reply alone
            device = next(self.gen.model.parameters()).device
            replies = generate_pairs(
                self.gen.model, self.gen.tokenizer, prompts, self.spec.max_new_tokens, device, self.spec.batch_size
            )
        else:
            replies = greedy_replies(self.gen, prompts, self.spec.max_new_tokens, self.spec.batch_size)
        return replies if self.chat else [self.template.cut(r) for r in replies]


def prepare_generator(config: JobConfig):
    """Read the config's rows and build the generator: (generator, data, evaluation splits of shots, language)."""

    quiet_libraries()
    set_threads(config.train.threads)  # once, for the whole job (the model and any encoder)
    spec = config.prompt
    if spec.method != "likelihood":
        raise ConfigError(
            f"prompt.method: {config.task} is prompted by generation (likelihood); "
            f"'{spec.method}' classifies whole texts"
        )
    task = get_task(config.task)
    data = task.load_data(config, Problems(skip=config.data.on_error == "skip"))
    labelled_pool(config, data)
    if config.task == "causal_lm" and task.mode != "chat":
        raise ConfigError(
            "data.train: causal_lm data is raw text, which has no answers to prompt for; "
            "give instruction data (alpaca, messages or ShareGPT rows) or a seq2seq config"
        )
    for note in data.notes:
        log.info(note)
    splits = evaluation_splits(data, spec)
    set_seed(spec.seed)
    train = [shot_of(ex) for ex in data.train] if spec.shots else []
    if spec.shots and not train:
        raise DataError("prompt.shots: the training data has no rows to show as examples")
    language = (
        spec.language
        if spec.language != "auto"
        else detect_language([s.request for s in train] or [shot_of(ex).request for ex in next(iter(splits.values()))])
    )
    generator = PromptGenerator(spec, train, language, device=config.device)
    return generator, data, {name: [shot_of(ex) for ex in rows] for name, rows in splits.items()}, language


def generate_splits(config: JobConfig) -> tuple[dict, dict, object, str]:
    """(metrics and prediction rows per split, details of the prompt, the data, the language)."""

    generator, data, splits, language = prepare_generator(config)
    results = {}
    started = time.perf_counter()
    for split, requests in splits.items():
        per = generator.shown(requests)
        replies = generator.replies(requests, per)
        metrics = generation_metrics(replies, [r.answer for r in requests])
        metrics.update(count=len(requests), empty_replies=sum(not r.strip() for r in replies))
        rows = [
            {
                "split": split,
                "where": r.where,
                "request": r.request,
                "reference": r.answer,
                "generated": g,
                "examples": [generator.train[i].where for i in idx],
            }
            for r, g, idx in zip(requests, replies, per)
        ]
        results[split] = (metrics, None, rows)
    details = {**generator.details(), "seconds": round(time.perf_counter() - started, 1)}
    return results, details, data, language
