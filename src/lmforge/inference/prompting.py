"""What every generation engine shares (``Generator`` on PyTorch, ``LlamaCppGenerator`` on
llama.cpp): prompts as token ids through the chat template, the checks on a prompt's length, and
the text of a reply with its stop strings applied."""

import transformers

from lmforge.errors import DataError
from lmforge.models.decoding import Generation, GenerationOptions
from lmforge.tasks.causal_lm import CHATML


class Prompting:
    """Prompts as token ids, through the chat template when the model has one: what every engine
    (``Generator`` on PyTorch, ``LlamaCppGenerator`` on llama.cpp) shares. Needs ``tokenizer``
    and ``seq2seq``."""

    tokenizer: transformers.PreTrainedTokenizerBase
    seq2seq: bool
    context: int | None = None  # the most tokens of prompt and reply (of the prompt alone with output_context)
    output_context: int | None = None  # an encoder-decoder's longest reply; None: one window for both

    @property
    def has_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None)) and not self.seq2seq

    @property
    def template_takes_tools(self) -> bool:
        return self.has_template and "tools" in str(self.tokenizer.chat_template)

    def encode(self, prompt: str | list[dict], raw: bool = False, tools: list[dict] | None = None) -> list[int]:
        """Token ids of a prompt: a string (through the chat template unless ``raw`` or the model
        has none) or a list of chat messages (with ``tools`` for a template that takes them)."""
        if isinstance(prompt, list):
            if not self.has_template:
                self.tokenizer.chat_template = CHATML
            text = self.tokenizer.apply_chat_template(
                prompt,
                tools=tools or None,  # type: ignore[arg-type]  # JSON schemas; it also takes functions
                tokenize=False,
                add_generation_prompt=True,
            )
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.has_template and not raw:
            return self.encode([{"role": "user", "content": prompt}])
        if self.seq2seq:  # the encoder reads the source as the task trained it: text + end token
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        return self.tokenizer(prompt)["input_ids"]

    def generate(
        self, prompt: str | list[dict], options: GenerationOptions, raw: bool = False, stream=None
    ) -> Generation:
        """Generate a reply; ``stream(text_piece)`` is called as text arrives (not with beams)."""
        return self.generate_ids(self.encode(prompt, raw), options, stream)

    def generate_ids(self, ids: list[int], options: GenerationOptions, stream=None) -> Generation:
        raise NotImplementedError

    def _check_prompt(
        self, ids: list[int], options: GenerationOptions, context: int | None, output: int | None = None
    ) -> None:
        """``context``: the most tokens of prompt and reply together, or of the prompt alone when
        ``output`` (an encoder-decoder's decoder length) bounds the reply apart."""
        options.check()
        if not ids:
            raise DataError("empty prompt")
        if output is not None:
            if context and len(ids) > context:
                raise DataError(f"the prompt is {len(ids)} tokens; the model's input limit is {context} tokens")
            if options.max_new_tokens > output:
                raise DataError(
                    f"--max-new-tokens {options.max_new_tokens}: over the model's output limit of {output} tokens"
                )
        elif context and len(ids) + options.max_new_tokens > context:
            raise DataError(
                f"the prompt is {len(ids)} tokens; with --max-new-tokens {options.max_new_tokens} "
                f"that is over the model's context of {context} tokens"
            )

    def _reply(self, new: list[int], stopped_by: str, options: GenerationOptions) -> tuple[str, str]:
        """The text of the new tokens (end-of-sequence left out) and why it stopped: a character cut
        in half by the token limit is dropped, and the text ends before the first stop string."""
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence decodes to one string
        if stopped_by == "length":
            text = text.rstrip("\ufffd")
        for stop in options.stop:
            if stop in text:
                text, stopped_by = text[: text.index(stop)], "stop"
        return text, stopped_by
