"""llama.cpp as a generation engine: GGUF models (the bundled SmolLM2, ``lmforge export --gguf``
output, any ``.gguf`` file) decoded by llama.cpp's CPU kernels through llama-cpp-python, with the
same prompts, chat templates, sampling and stop rules as the PyTorch engine.

llama.cpp computes the logits; lmforge keeps the rest: the Hugging Face tokenizer (the run's or the
bundled model's, else the one transformers reads from the GGUF file) encodes prompts through the chat
template, and decoding (greedy, temperature, top-k, top-p, repetition penalty, seeds, stop strings;
in the server also logprobs, penalties, logit bias and grammars) is lmforge's own on those logits. So
a reply means the same whichever engine produced it, and the server's features work on both. The
tokenizer is checked to give llama.cpp's own token ids on probe texts.

``engine``: ``auto`` picks llama.cpp for a GGUF source when llama-cpp-python is installed (set-up
builds it from source), else PyTorch; ``torch`` and ``llama_cpp`` ask for one. llama.cpp runs on the
CPU, one sequence at a time, with the longest common prompt prefix kept in its KV cache between
sequences.
"""

import atexit
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from lmforge.errors import ConfigError, DataError, ModelError
from lmforge.inference.prompting import Prompting
from lmforge.models.bundled import BUNDLED
from lmforge.models.decoding import Generation, GenerationOptions, Streamer, sample_next, stop_ids
from lmforge.paths import cache_root, package_dir

log = logging.getLogger("lmforge")
ENGINES = ("auto", "torch", "llama_cpp")
# llama.cpp's file types (general.file_type) of the weights lmforge writes or ships
GGUF_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 15: "q4_k_m", 17: "q5_k_m", 18: "q6_k", 32: "bf16"}
PROBES = ("Hello world! 12345", "  leading spaces, tabs\tand\nnew lines", "émigré 日本語 🙂")
MAX_CONTEXT = 8192  # KV cache positions (at most the model's own; longer ones would take GBs)


def llama_cpp_available() -> bool:
    return package_dir("llama_cpp") is not None


def find_gguf(source: str) -> Path | None:
    """The GGUF file a source names: a ``.gguf`` path, a folder (a run or export folder) holding
    exactly one ``*.gguf``, or a bundled model shipped as GGUF; None otherwise."""
    entry = BUNDLED.get(source)
    if entry is not None and entry.gguf is not None:
        root = package_dir(entry.package)
        return root / entry.gguf if root is not None and (root / entry.gguf).is_file() else None
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise ModelError(f"{source}: {len(found)} GGUF files ({', '.join(f.name for f in found)}); name one")
        return found[0] if found else None
    return None


def pick_engine(source: str, engine: str) -> str:
    """``torch`` or ``llama_cpp`` for ``source``."""
    if engine not in ENGINES:
        raise ConfigError(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
    if engine == "torch":
        return "torch"
    gguf = find_gguf(source)
    if engine == "llama_cpp":
        if gguf is None:
            raise ModelError(f"{source}: engine llama_cpp needs a GGUF model (a .gguf file, or a folder with one)")
        if not llama_cpp_available():
            raise ModelError("engine llama_cpp needs llama-cpp-python: pip install llama-cpp-python")
        return "llama_cpp"
    return "llama_cpp" if gguf is not None and llama_cpp_available() else "torch"


def _tokenizer_folder(source: str, gguf: Path) -> Path | None:
    """A Hugging Face tokenizer saved beside the GGUF's model: the run's ``model/``, or the bundled
    model's converted folder when it exists."""
    if source in BUNDLED:
        folder = cache_root() / "models" / source
        return folder if (folder / "tokenizer.json").is_file() else None
    for folder in (gguf.parent / "model", gguf.parent):
        if (folder / "tokenizer.json").is_file():
            return folder
    return None


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


class LlamaCppGenerator(Prompting):
    """A GGUF model on llama.cpp, with ``Generator``'s interface (``encode``, ``generate``,
    ``generate_ids``, ``tokenizer``, ``stop_ids``, ``context``, ``vocab``) and the steps the
    server's engine drives (``prefill``, ``step``, ``prompt_logits``)."""

    seq2seq = False
    record = None
    context: int  # positions the model was trained for, at most the context llama.cpp allocated
    engine = "llama_cpp"

    def __init__(self, source: str, threads: int | None = None):
        import llama_cpp

        gguf = find_gguf(source)
        if gguf is None:
            raise ModelError(f"{source}: no GGUF file found")
        self.folder, self.device = gguf.parent, torch.device("cpu")
        folder = _tokenizer_folder(source, gguf)
        try:
            if folder is not None:
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            else:
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{gguf}: no tokenizer for it ({str(exc).splitlines()[0]})") from None
        threads = threads or torch.get_num_threads() or os.cpu_count() or 1
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(gguf), n_ctx=MAX_CONTEXT, n_threads=threads, n_threads_batch=threads, verbose=False
            )
        except ValueError as exc:
            raise ModelError(f"{gguf}: llama.cpp cannot load it ({exc})") from None
        if "OPENMP = 1" in llama_cpp.llama_print_system_info().decode(errors="replace"):
            log.warning(
                "llama.cpp was built with OpenMP: PyTorch's OpenMP threads in the same process slow it by "
                "about a third; rebuild it: CMAKE_ARGS=-DGGML_OPENMP=OFF pip install --force-reinstall "
                "--no-cache-dir --no-deps llama-cpp-python"
            )
        atexit.register(self.llm.close)  # before the interpreter tears down what its destructor calls
        header = self.llm.metadata
        self.weights = f"gguf {GGUF_TYPES.get(int(header.get('general.file_type', -1)), 'mixed')}"
        trained = int(header.get(f"{header.get('general.architecture')}.context_length", 0) or 0)
        self.context = min(trained or MAX_CONTEXT, self.llm.n_ctx())  # positions the model was trained for
        self.vocab = self.llm.n_vocab()
        self.stop_ids = sorted(set(stop_ids(None, self.tokenizer)) | {self.llm.token_eos()})
        self._check_tokenizer(gguf)

    def _check_tokenizer(self, gguf: Path) -> None:
        for text in PROBES:
            ours = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            theirs = self.llm.tokenize(text.encode(), add_bos=False, special=False)
            if ours != theirs:
                raise ModelError(f"{gguf}: its tokenizer and llama.cpp's disagree on {text!r}: not the same model")

    # ---- the steps the engines drive ----

    def _logits(self) -> np.ndarray:
        """The last position's logits (V,), copied out of llama.cpp's buffer. NumPy: see
        ``sample_next`` on why the per-token work stays out of PyTorch."""
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab,)).copy()

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Logits after ``ids`` (V,), reusing the KV cache of the longest prefix already in it."""
        cached = self.llm.n_tokens
        common = 0
        limit = min(cached, len(ids) - 1)  # at least one token is evaluated, for its logits
        previous = self.llm.input_ids
        while common < limit and previous[common] == ids[common]:
            common += 1
        self.llm.n_tokens = common
        self.llm.eval(ids[common:])
        return self._logits()

    def step(self, token: int) -> np.ndarray:
        if self.llm.n_tokens >= self.context:
            raise DataError(f"the context of {self.context} tokens is full")
        self.llm.eval([token])
        return self._logits()

    def prompt_logits(self, ids: list[int]) -> torch.Tensor:
        """(len(ids) - 1, V): the logits before each token after the first (echo), one step at a time
        (llama.cpp keeps the last position's logits only)."""
        self.llm.n_tokens = 0
        rows = []
        for token in ids[:-1]:
            self.llm.eval([token])
            rows.append(self._logits())
        return torch.from_numpy(np.stack(rows))

    def score_continuations(self, prompt: list[int], continuations: list[list[int]]) -> list[float]:
        """Summed log p(continuation | prompt) for each continuation (``lmforge prompt``'s label
        scoring): the prompt runs once (after the prefix it shares with the previous prompt, still
        cached), then each continuation from the prompt's cache."""
        first = _log_softmax(self.prefill(prompt))
        scores = []
        for tokens in continuations:
            total = float(first[tokens[0]])
            self.llm.n_tokens = len(prompt)  # back to the end of the prompt: eval drops the rest
            for before, token in zip(tokens, tokens[1:]):
                total += float(_log_softmax(self.step(before))[token])
            scores.append(total)
        return scores

    # ---- Generator's interface (``generate`` is Prompting's) ----

    def generate_ids(self, ids: list[int], options: GenerationOptions, stream=None) -> Generation:
        if options.num_beams > 1:
            raise DataError("--num-beams: the llama_cpp engine decodes one beam (use --engine torch)")
        self._check_prompt(ids, options, self.context)
        rng = np.random.default_rng(options.seed)
        streamer = Streamer(self.tokenizer, stream, options.stop) if stream else None
        if streamer is not None:
            streamer.put(torch.tensor(ids))  # the prompt, which the streamer skips
        start = time.perf_counter()
        logits, stopped_by = self.prefill(ids), "length"
        new: list[int] = []
        while len(new) < options.max_new_tokens:
            token = sample_next(logits, options, ids + new, rng)
            if token in self.stop_ids:
                stopped_by = "eos"
                break
            new.append(token)
            if options.stop and any(stop in str(self.tokenizer.decode(new)) for stop in options.stop):
                stopped_by = "stop"
                break
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if len(new) < options.max_new_tokens:
                logits = self.step(token)
        seconds = time.perf_counter() - start
        text, stopped_by = self._reply(new, stopped_by, options)
        if streamer is not None:
            streamer.flush_rest(text)
        return Generation(text, len(ids), len(new) + (stopped_by == "eos"), seconds, stopped_by)
