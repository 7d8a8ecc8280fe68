"""Exports of a run's model: merged adapters, int8, ONNX; each variant re-evaluated (``pipeline``).

Nothing heavy is imported here: the CLI reads the steps' flags from ``pipeline`` when it starts.
"""

__all__ = ["merge_run", "run_export"]


def __getattr__(name):
    if name == "merge_run":
        from lmforge.export.merge import merge_run

        return merge_run
    if name == "run_export":
        from lmforge.export.pipeline import run_export

        return run_export
    raise AttributeError(name)
