"""Tokenizers: Hugging Face tokenizers, trained WordPiece for from-scratch models, coverage checks."""
