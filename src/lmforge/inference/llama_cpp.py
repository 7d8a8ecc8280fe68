"""llama.cpp as a generation engine: GGUF models (the bundled SmolLM2, ``lmforge export --gguf``
output, any ``.gguf`` file) decoded by llama.cpp through llama-cpp-python, with the
same prompts, chat templates, sampling and stop rules as the PyTorch engine.

llama.cpp computes the logits; lmforge keeps the rest: the Hugging Face tokenizer (the run's or the
bundled model's, else the one transformers reads from the GGUF file) encodes prompts through the chat
template, and decoding (greedy, temperature, top-k, top-p, repetition penalty, seeds, stop strings;
in the server also logprobs, penalties, logit bias and grammars) is lmforge's own on those logits. So
a reply means the same whichever engine produced it, and the server's features work on both. The
tokenizer is checked to give llama.cpp's own token ids on probe texts.

``engine``: ``auto`` picks llama.cpp for a GGUF source when llama-cpp-python is installed (set-up
builds it from source), else PyTorch; ``torch`` and ``llama_cpp`` ask for one. llama.cpp runs on the
CPU, or with every layer and its KV cache on the GPU of ``--device cuda[:N]`` where llama-cpp-python
was built with a GPU back end (``CMAKE_ARGS=-DGGML_CUDA=on``; set-up builds it for the CPU). On a GPU
it cannot use, ``auto`` runs the GGUF on PyTorch on the GPU (``inference/generator.py``).

``Sequences`` is lmforge's own llama.cpp context (llama-cpp-python's ``Llama`` only loads the model
and tokenizes, with a context of a few positions): several sequences share one KV cache of
``MAX_CONTEXT`` positions (llama.cpp's unified cache), so the server decodes the rows of concurrent
requests in one ``llama_decode`` per step, as its PyTorch engine does, and a decoding step of 8
rows costs little more than one (it is bound by reading the weights). Each sequence keeps its
tokens' keys and values after it ends; the next prompt that starts the same way (a system prompt, a
chat's earlier turns) computes only what differs. Sequence 0 serves ``generate``, ``prompt`` and
scoring; the server's rows take 1, 2, ...
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
BATCH = 512  # tokens per llama_decode call (a longer prompt goes in several)
LOADER_CONTEXT = 64  # the context of llama-cpp-python's own Llama object, which decodes nothing


def llama_cpp_available() -> bool:
    return package_dir("llama_cpp") is not None


def llama_cpp_gpu() -> bool:
    """Whether the installed llama-cpp-python can put layers on a GPU (built with CUDA or another
    GPU back end; set-up builds it for the CPU)."""
    if not llama_cpp_available():
        return False
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


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


def shared_prefix(a: list[int], b: list[int]) -> int:
    """The length of the prefix ``a`` and ``b`` share."""
    common, limit = 0, min(len(a), len(b))
    while common < limit and a[common] == b[common]:
        common += 1
    return common


class Sequences:
    """A llama.cpp context whose ``count`` sequences share one KV cache of ``positions`` cells.

    ``cached[seq]`` are the tokens whose keys and values sequence ``seq`` holds, positions 0, 1, ...
    ``reuse`` keeps the longest prefix a new prompt shares with them; ``decode`` runs new tokens of
    several sequences through the model at once and returns their logits."""

    def __init__(self, llm, count: int, positions: int, threads: int):
        import llama_cpp
        from llama_cpp import _internals

        self.count = min(count, int(llama_cpp.llama_max_parallel_sequences()))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = positions, BATCH, BATCH
        params.n_seq_max, params.kv_unified = self.count, True
        params.n_threads = params.n_threads_batch = threads
        try:
            self.context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except ValueError as exc:
            raise ModelError(f"llama.cpp cannot make a context of {positions} positions ({exc})") from None
        self.positions = self.context.n_ctx()
        self.vocab = llm.n_vocab()
        self.batch = _internals.LlamaBatch(n_tokens=BATCH, embd=0, n_seq_max=1, verbose=False)
        self.cached: list[list[int]] = [[] for _ in range(self.count)]
        self._llama_cpp = llama_cpp

    def close(self) -> None:
        self.batch.close()
        self.context.close()

    def used(self) -> int:
        """KV cells holding some sequence's tokens."""
        return sum(len(tokens) for tokens in self.cached)

    def reuse(self, seq: int, ids: list[int], keep_one: bool = True) -> int:
        """Keep the longest prefix ``seq``'s cache shares with ``ids`` (with ``keep_one``, at most
        all but the last token, whose logits are wanted) and drop the rest; its length."""
        common = shared_prefix(self.cached[seq], ids[: len(ids) - 1] if keep_one else ids)
        self.drop(seq, common)
        return common

    def share(self, source: int, seq: int, length: int) -> None:
        """Make ``seq`` hold the first ``length`` tokens ``source`` holds, without computing them:
        in the unified cache their cells become ``seq``'s too."""
        if length <= shared_prefix(self.cached[seq], self.cached[source][:length]):
            self.drop(seq, length)
            return
        self.drop(seq)
        self._llama_cpp.llama_memory_seq_cp(self.context.memory, source, seq, 0, length)
        self.cached[seq] = self.cached[source][:length]

    def drop(self, seq: int, start: int = 0) -> None:
        """Forget ``seq``'s tokens from position ``start`` on."""
        if start < len(self.cached[seq]):
            self._llama_cpp.llama_memory_seq_rm(self.context.memory, seq, start, -1)
            del self.cached[seq][start:]

    def decode(self, work: list[tuple[int, list[int], bool]]) -> list[np.ndarray]:
        """Run each ``(seq, tokens, every)`` entry's tokens after what its sequence holds, all in as
        few ``llama_decode`` calls as ``BATCH`` allows; per entry the logits (V,) after its last
        token, or with ``every`` those after each of its tokens (n, V)."""
        llama_cpp, batch = self._llama_cpp, self.batch.batch
        wanted: list[list[np.ndarray]] = [[] for _ in work]
        if not all(tokens for _, tokens, _ in work):
            raise ValueError("every sequence needs a token to decode")
        entries = [(k, seq, tokens, every) for k, (seq, tokens, every) in enumerate(work)]
        at = [0] * len(work)  # tokens of each entry already decoded
        while entries:
            batch.n_tokens, rows, parts = 0, [], []  # rows: (entry, batch index) whose logits to copy out
            for k, seq, tokens, every in entries:
                room = BATCH - batch.n_tokens
                if room == 0:
                    break
                start, position = at[k], len(self.cached[seq])
                part = tokens[start : start + room]
                parts.append((k, seq, part))
                for offset, token in enumerate(part):
                    i = batch.n_tokens + offset
                    last = start + offset == len(tokens) - 1
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position + offset, 1
                    batch.seq_id[i][0] = seq
                    batch.logits[i] = every or last
                    if every or last:
                        rows.append((k, i))
                batch.n_tokens += len(part)
            self._decode_batch()
            for k, i in rows:
                pointer = llama_cpp.llama_get_logits_ith(self.context.ctx, i)
                wanted[k].append(np.ctypeslib.as_array(pointer, shape=(self.vocab,)).copy())
            for k, seq, part in parts:  # decoded: now in the sequences' caches
                self.cached[seq].extend(part)
                at[k] += len(part)
            entries = [entry for entry in entries if at[entry[0]] < len(entry[2])]
        return [np.stack(rows) if every else rows[-1] for rows, (_, _, every) in zip(wanted, work)]

    def _decode_batch(self) -> None:
        code = self._llama_cpp.llama_decode(self.context.ctx, self.batch.batch)
        if code == 1:
            raise DataError(
                f"llama.cpp's KV cache ({self.positions} positions) has no room for {self.batch.batch.n_tokens} more"
            )
        if code != 0:
            raise ModelError(f"llama.cpp could not decode (llama_decode returned {code})")


class LlamaCppGenerator(Prompting):
    """A GGUF model on llama.cpp, with ``Generator``'s interface (``encode``, ``generate``,
    ``generate_ids``, ``tokenizer``, ``stop_ids``, ``context``, ``vocab``) and the steps the
    server's engine drives (``prefill``, ``step``, ``prompt_logits``)."""

    seq2seq = False
    record = None
    context: int  # positions the model was trained for, at most the context llama.cpp allocated
    engine = "llama_cpp"

    def __init__(self, source: str, threads: int | None = None, device: torch.device | None = None):
        import llama_cpp

        gguf = find_gguf(source)
        if gguf is None:
            raise ModelError(f"{source}: no GGUF file found")
        self.folder, self.device = gguf.parent, device or torch.device("cpu")
        # on a GPU every layer and the KV cache go to it (llama.cpp's offload), on device.index only
        on_gpu = self.device.type == "cuda"
        split = llama_cpp.LLAMA_SPLIT_MODE_NONE if on_gpu else llama_cpp.LLAMA_SPLIT_MODE_LAYER
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
                model_path=str(gguf),
                n_ctx=LOADER_CONTEXT,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
                n_gpu_layers=-1 if on_gpu else 0,
                main_gpu=(self.device.index or 0) if on_gpu else 0,
                split_mode=split,
            )
        except ValueError as exc:
            raise ModelError(f"{gguf}: llama.cpp cannot load it ({exc})") from None
        self.threads = threads
        self.sequences = Sequences(self.llm, 1, MAX_CONTEXT, threads)
        if "OPENMP = 1" in llama_cpp.llama_print_system_info().decode(errors="replace"):
            log.warning(
                "llama.cpp was built with OpenMP: PyTorch's OpenMP threads in the same process slow it by "
                "about a third; rebuild it: CMAKE_ARGS=-DGGML_OPENMP=OFF pip install --force-reinstall "
                "--no-cache-dir --no-deps llama-cpp-python"
            )
        atexit.register(self.close)  # before the interpreter tears down what its destructor calls
        header = self.llm.metadata
        self.weights = f"gguf {GGUF_TYPES.get(int(header.get('general.file_type', -1)), 'mixed')}"
        trained = int(header.get(f"{header.get('general.architecture')}.context_length", 0) or 0)
        self.context = min(trained or MAX_CONTEXT, self.sequences.positions)  # positions the model was trained for
        self.vocab = self.llm.n_vocab()
        self.stop_ids = sorted(set(stop_ids(None, self.tokenizer)) | {self.llm.token_eos()})
        self._check_tokenizer(gguf)

    def _check_tokenizer(self, gguf: Path) -> None:
        for text in PROBES:
            ours = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            theirs = self.llm.tokenize(text.encode(), add_bos=False, special=False)
            if ours != theirs:
                raise ModelError(f"{gguf}: its tokenizer and llama.cpp's disagree on {text!r}: not the same model")

    def close(self) -> None:
        self.sequences.close()
        self.llm.close()

    def open_sequences(self, count: int) -> Sequences:
        """The context with at least ``count`` sequences (the server's rows, and sequence 0), made
        anew where the one open has fewer."""
        if self.sequences.count < count:
            self.sequences.close()
            self.sequences = Sequences(self.llm, count, MAX_CONTEXT, self.threads)
            if self.sequences.count < count:
                raise ModelError(f"llama.cpp decodes at most {self.sequences.count - 1} sequences at once")
        return self.sequences

    # ---- the steps the engines drive (sequence 0) ----

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Logits after ``ids`` (V,), reusing the KV cache of the longest prefix already in it."""
        common = self.sequences.reuse(0, ids)
        return self.sequences.decode([(0, ids[common:], False)])[0]

    def step(self, token: int) -> np.ndarray:
        if len(self.sequences.cached[0]) >= self.context:
            raise DataError(f"the context of {self.context} tokens is full")
        return self.sequences.decode([(0, [token], False)])[0]

    def prompt_logits(self, ids: list[int]) -> torch.Tensor:
        """(len(ids) - 1, V): the logits before each token after the first (echo)."""
        self.sequences.drop(0)
        if len(ids) < 2:
            return torch.empty(0, self.vocab)
        return torch.from_numpy(self.sequences.decode([(0, ids[:-1], True)])[0])

    def score_continuations(self, prompt: list[int], continuations: list[list[int]]) -> list[float]:
        """Summed log p(continuation | prompt) for each continuation (``lmforge prompt``'s label
        scoring): the prompt runs once (after the prefix it shares with the previous prompt, still
        cached), then each continuation's tokens in one pass from the prompt's cache."""
        first = _log_softmax(self.prefill(prompt))
        scores = []
        for tokens in continuations:
            total = float(first[tokens[0]])
            if len(tokens) > 1:
                self.sequences.drop(0, len(prompt))  # back to the end of the prompt
                after = self.sequences.decode([(0, tokens[:-1], True)])[0]
                total += sum(float(_log_softmax(row)[token]) for row, token in zip(after, tokens[1:]))
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
