"""Inference: load a finished run once and predict, evaluate or generate with it, alone or as an
ensemble. The one path ``predict``, ``eval``, ``serve``, ``compare``, ``prompt`` and the export
parity checks share."""
