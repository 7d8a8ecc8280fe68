"""Text generation with causal LMs: one-shot prompts and multi-turn chat."""

from lmforge.generation.generator import GenerationOptions, Generator

__all__ = ["GenerationOptions", "Generator"]
