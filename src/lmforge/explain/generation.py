"""Explanations of generated text: which prompt tokens drove a continuation, through captum's LLM
attribution (``LLMGradientAttribution`` / ``LLMAttribution``): the score is the log-probability of
the continuation's tokens given the prompt, teacher-forced. The continuation is ``--target`` when
given, else the model's own greedy reply. Besides one attribution per prompt token for the whole
span, each generated token gets its own row (``token_attributions``).
"""

import torch
from captum.attr import (
    FeatureAblation,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMGradientAttribution,
    TextTokenInput,
)

from lmforge.errors import DataError, ModelError
from lmforge.explain.attribution import GRADIENT_METHODS, Attribution, check_method
from lmforge.inference.generator import Generator
from lmforge.models.decoding import GenerationOptions

GENERATION_METHODS = (*GRADIENT_METHODS, "occlusion")


class GenerationExplainer:
    def __init__(self, generator):
        if not isinstance(generator, Generator):
            raise ModelError("explain needs the PyTorch engine (a GGUF file or an n-gram LM cannot be explained)")
        self.generator = generator
        self.model = generator.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = generator.tokenizer
        self.methods = GENERATION_METHODS

    def reply(self, prompt: str, max_new_tokens: int) -> str:
        ids = self.tokenizer(prompt)["input_ids"]
        return self.generator.generate_ids(ids, GenerationOptions(max_new_tokens=max_new_tokens)).text

    def explain(
        self,
        prompt: str,
        method: str | None = None,
        target: str | None = None,
        max_new_tokens: int = 16,
        steps: int = 32,
    ) -> Attribution:
        method = method or self.methods[0]
        check_method(method, self.methods, "generation")
        if not prompt:
            raise DataError("--text: an empty prompt has nothing to attribute")
        target = self.reply(prompt, max_new_tokens) if target is None else target
        if not self.tokenizer(target, add_special_tokens=False)["input_ids"]:
            raise DataError("the continuation to explain is empty (the model ended at once; give --target TEXT)")
        skip = [t for t in (self.tokenizer.bos_token_id,) if t is not None]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        inp = TextTokenInput(prompt, self.tokenizer, baselines=pad, skip_tokens=skip)
        embeddings = self.model.get_input_embeddings()
        if method == "occlusion":
            result = LLMAttribution(FeatureAblation(self.model), self.tokenizer).attribute(inp, target=target)
        else:
            inner = (
                LayerIntegratedGradients(self.model, embeddings)
                if method == "integrated_gradients"
                else LayerGradientXActivation(self.model, embeddings)
            )
            options = {"n_steps": steps} if method == "integrated_gradients" else {}
            result = LLMGradientAttribution(inner, self.tokenizer).attribute(inp, target=target, **options)
        tokens = [self._readable(t) for t in result.input_tokens]
        scores = result.seq_attr.detach().float().cpu().tolist()
        per_token = result.token_attr.detach().float().cpu() if result.token_attr is not None else torch.zeros(0)
        extra = {
            "generated": target,
            "output_tokens": [self._readable(t) for t in result.output_tokens],
            "token_attributions": [[round(float(v), 6) for v in row] for row in per_token],
        }
        return Attribution(prompt, tokens, scores, method, target, [], extra)

    def _readable(self, token: str) -> str:
        text = self.tokenizer.convert_tokens_to_string([token])
        return text if text else token
