"""Load a causal LM once (a run folder, a bundled alias such as ``smollm2``, or a local Hugging Face
folder) and generate from it: greedy, sampling (temperature, top-k, top-p), beam search, repetition
penalty, stop strings, a seed, and streaming.

A prompt goes through the model's chat template when it has one (an instruction-tuned model expects
it), unless ``raw`` is asked for; a model without a template continues the text as given. Decoding
runs under ``torch.inference_mode`` with the KV cache on.
"""

import time
from pathlib import Path

import torch
import transformers

from lmforge.errors import ConfigError, ModelError
from lmforge.inference.llama_cpp import LlamaCppGenerator, llama_cpp_gpu, pick_engine
from lmforge.inference.prompting import Prompting
from lmforge.inference.weights import check_dtype, settle_weights
from lmforge.models import load_saved
from lmforge.models.decoding import Generation, GenerationOptions, Streamer, greedy_batch, stop_ids
from lmforge.models.safe_loading import check_model_folder
from lmforge.models.transformer import resolve_source
from lmforge.runtime import resolve_device
from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_record import RunRecord


def resolve_model_folder(source: str, checkpoint: str = "auto") -> tuple[Path, RunRecord | None]:
    """A run folder, bundled alias or local folder -> (model folder, the run's record or None)."""
    path = Path(source).expanduser()
    if (path / "lmforge.json").is_file():
        run = RunFolder(path)
        record = run.read_record()
        if record.task not in ("causal_lm", "seq2seq"):
            raise ModelError(
                f"{source}: a {record.task} run; generation needs a causal_lm or seq2seq "
                "run (or a bundled alias such as smollm2, or a model folder)"
            )
        return run.model_dir(checkpoint), record
    folder, _ = resolve_source(source)
    return folder, None


def open_generator(
    source: str,
    checkpoint: str = "auto",
    device: str = "auto",
    engine: str = "torch",
    dtype: str = "float32",
    peft: bool = False,
    prompt_lookup: int = 0,
):
    """What generates for ``source``: a ``Generator`` over a transformers model on ``device`` with its
    weights in ``dtype`` (``inference/weights.py``), a ``LlamaCppGenerator`` over a GGUF model
    (``engine``: ``inference/llama_cpp.py``; its weights are the file's), or, for a run whose model
    generates by itself (one-pass families: the n-gram LM, on the CPU), that model, which has the
    same ``generate(prompt, options, raw, stream)``. ``prompt_lookup``: see ``Generator``."""
    check_dtype(dtype, resolve_device(device))  # bad flags fail before anything loads
    path = Path(source).expanduser()
    if (path / "lmforge.json").is_file():
        folder, record = resolve_model_folder(source, checkpoint)
        if record is not None and record.model.one_pass:
            return load_saved(folder, record).model
    if pick_engine(source, engine) == "llama_cpp":
        target = resolve_device(device)
        if target.type != "cuda" or llama_cpp_gpu():
            return LlamaCppGenerator(source, device=target)
        if engine == "llama_cpp":
            raise ConfigError(
                f"--device {device}: this llama-cpp-python is built for the CPU only (rebuild it with "
                "CMAKE_ARGS=-DGGML_CUDA=on, or use --engine torch or --device cpu)"
            )
        # engine auto on a GPU that llama.cpp cannot use: PyTorch on the GPU (transformers reads the GGUF)
    return Generator(source, checkpoint, device, dtype, peft, prompt_lookup)


def open_transformer(
    source: str, device: str = "auto", engine: str = "torch", **options
) -> "Generator | LlamaCppGenerator":
    """``open_generator`` for what needs a transformer's tokens and logits (``prompt``, the server):
    an n-gram LM run is refused."""
    generator = open_generator(source, device=device, engine=engine, **options)
    if not isinstance(generator, Generator | LlamaCppGenerator):
        raise ModelError(f"{source}: an n-gram language model run; this needs a transformers model (or a GGUF file)")
    return generator


def greedy_replies(generator, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy replies to prompts (token ids), in input order: batched (left-padded) on PyTorch, one
    after the other on llama.cpp (which keeps the prefix consecutive prompts share cached)."""
    if isinstance(generator, LlamaCppGenerator):
        options = GenerationOptions(max_new_tokens=max_new_tokens)
        return [generator.generate_ids(ids, options).text.strip() for ids in prompts]
    return greedy_batch(generator.model, generator.tokenizer, prompts, max_new_tokens, batch_size)


POSITION_LIMITS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
FALLBACK_CONTEXT = 4096  # a model that declares no length of its own and has no run record


def model_limits(config, record, seq2seq: bool) -> tuple[int, int | None]:
    """(the longest input, the longest output) in tokens. Causal models: one window for the prompt and
    the reply together (output None), its position embeddings' length; a family without positions (an
    LSTM language model) has the length its run trained on. Seq2seq models: the encoder's input and
    the decoder's output apart; T5's relative positions have no length, so its run's ``max_length``
    and ``max_target_length`` bound them. Nothing generates without a bound."""
    declared = next(
        (int(v) for v in (getattr(config, k, None) for k in POSITION_LIMITS) if isinstance(v, int) and v > 0), None
    )
    trained = record.max_length if record is not None else None
    context = declared or trained or FALLBACK_CONTEXT
    if not seq2seq:
        return context, None
    target = ((record.head_options or {}).get("max_target_length") if record is not None else None) or None
    return context, declared or target or FALLBACK_CONTEXT


class Generator(Prompting):
    """A transformers model generating with ``model.generate``. ``prompt_lookup`` N > 0: speculative
    decoding by prompt lookup (Hugging Face's ``prompt_lookup_num_tokens``): up to N tokens that
    follow an earlier occurrence of the last tokens in the prompt or the reply are proposed and
    checked in one forward pass. In float32 the reply is the one plain decoding gives (greedy: the
    same tokens, tested); in bf16/int8 the checking pass's numbers differ slightly from one token's,
    so near ties may flip. Off by default: measured (``bench/prompt_lookup.py``), it made SmolLM2
    4x faster on a reply that copies its prompt, but 7 % slower on alpaca's rewrite/summarize rows,
    whose replies copy little. Causal LMs, one beam.
    """

    engine = "torch"

    def __init__(
        self,
        source: str,
        checkpoint: str = "auto",
        device: str = "auto",
        dtype: str = "float32",
        peft: bool = False,
        prompt_lookup: int = 0,
    ):
        if prompt_lookup < 0:
            raise ConfigError(f"--prompt-lookup {prompt_lookup}: give 0 (off) or a number of tokens")
        self.prompt_lookup = prompt_lookup
        self.device = resolve_device(device)  # ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``
        folder, self.record = resolve_model_folder(source, checkpoint)
        if self.record is not None and self.record.model.one_pass:
            raise ModelError(
                f"{source}: an n-gram language model run: `lmforge generate` samples from it, "
                "but it is not a transformers model (the server does not serve it)"
            )
        check_model_folder(folder, source)
        self.folder = folder
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        auto = transformers.AutoModelForSeq2SeqLM if self.seq2seq else transformers.AutoModelForCausalLM
        try:
            self.model = auto.from_pretrained(
                folder, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
            )
        except ValueError as exc:
            raise ModelError(f"{source}: not a generative language model ({str(exc).splitlines()[0]})") from None
        self.model.to(self.device).eval()  # type: ignore[arg-type]  # transformers' @wraps hides Module.to's signature
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.weights = settle_weights(self.model, self.tokenizer, dtype, source, peft)  # what the weights compute in
        self.context, self.output_context = model_limits(self.model.config, self.record, self.seq2seq)
        self.stop_ids = stop_ids(self.model, self.tokenizer)
        self.vocab = int(getattr(self.model.get_input_embeddings(), "num_embeddings"))  # ids 0 .. vocab - 1

    def generate_ids(self, ids: list[int], options: GenerationOptions, stream=None) -> Generation:
        """Generate from prompt token ids (see ``generate``)."""
        self._check_prompt(ids, options, self.context, self.output_context)
        if options.seed is not None:
            torch.manual_seed(options.seed)
        config = transformers.GenerationConfig(
            max_new_tokens=options.max_new_tokens,
            do_sample=options.sampling,
            temperature=(options.temperature or 1.0) if options.sampling else None,
            top_k=options.top_k if options.sampling else None,
            top_p=options.top_p if options.sampling else None,
            num_beams=options.num_beams,
            repetition_penalty=options.repetition_penalty,
            eos_token_id=self.stop_ids or None,
            pad_token_id=self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else (self.stop_ids[0] if self.stop_ids else 0),
            stop_strings=options.stop or None,
        )
        if self.prompt_lookup and options.num_beams == 1 and not self.seq2seq:
            config.prompt_lookup_num_tokens = self.prompt_lookup
        streamer = Streamer(self.tokenizer, stream, options.stop) if stream and options.num_beams == 1 else None
        inputs = torch.tensor([ids], device=self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                generation_config=config,
                streamer=streamer,
                tokenizer=self.tokenizer if options.stop else None,
            )
        seconds = time.perf_counter() - start
        new = out[0, 1:].tolist() if self.seq2seq else out[0, len(ids) :].tolist()  # seq2seq: drop the start token
        stopped_by = "length"
        if new and new[-1] in self.stop_ids:
            new, stopped_by = new[:-1], "eos"
        text, stopped_by = self._reply(new, stopped_by, options)
        if streamer is not None:
            streamer.flush_rest(text)
        return Generation(text, len(ids), len(new) + (stopped_by == "eos"), seconds, stopped_by)
