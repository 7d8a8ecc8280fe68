"""``lmforge ui``: a web dashboard and playground over a folder of run folders, served by lmforge
itself (no CDN: every asset is in ``static/``).

- ``runs``: the run, compare and tune folders under the root, and what the browser reads of each.
- ``jobs``: training jobs started from the page, as ``lmforge train`` child processes.
- ``playground``: one run loaded at a time and served by the serving app (``/play/...``), so the
  page's classify, NER and streamed chat calls go through the same routes, limits and errors as
  ``lmforge serve``.
- ``app``: the FastAPI app that wires them with the same API-key rules as the server.

Layer 7, beside ``serving`` (DESIGN.md); only ``cli`` imports it.
"""
