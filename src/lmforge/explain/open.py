"""``open_explainer(run)``: the explainer a run (or bundled LM) calls for, by its task, the one way
into ``explain`` for the CLI and the web UI."""

from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import DataError
from lmforge.explain.attribution import Attribution
from lmforge.explain.classify import ClassificationExplainer
from lmforge.explain.entities import EntityExplainer
from lmforge.explain.generation import GenerationExplainer
from lmforge.inference.generator import open_generator
from lmforge.inference.predictor import RunPredictor
from lmforge.tracking.run_folder import META, RunFolder

TASKS = ("classification", "token_classification", "causal_lm")


@dataclass
class OpenedExplainer:
    """``task`` and its explainer; ``predictor``: the run's predictor (classification and NER)."""

    task: str
    explainer: ClassificationExplainer | EntityExplainer | GenerationExplainer
    predictor: RunPredictor | None = None

    def explain(
        self,
        text: str,
        method: str | None = None,
        target: str | None = None,
        *,
        pair: str | None = None,
        entity: str | None = None,
        steps: int = 50,
        max_new_tokens: int = 16,
    ) -> list[Attribution]:
        """The attributions of one text: one for a classification or a generation, one per
        predicted entity (or ``entity`` only) for NER."""
        if isinstance(self.explainer, ClassificationExplainer):
            if entity:
                raise DataError("explain: --entity is for NER runs")
            return [self.explainer.explain(text, pair, method, target, steps)]
        if isinstance(self.explainer, EntityExplainer):
            if target:
                raise DataError("explain: --target is for classification and language models (NER: --entity)")
            return self.explainer.explain(text, method, entity, steps)
        if entity:
            raise DataError("explain: --entity is for NER runs")
        return [self.explainer.explain(text, method, target, max_new_tokens, steps)]


def open_explainer(run: str, checkpoint: str = "auto", device: str = "auto") -> OpenedExplainer:
    """The explainer of ``run``: a run folder, a model folder or a bundled language model."""
    path = Path(run).expanduser()
    task = RunFolder(path).read_record().task if (path / META).is_file() else "causal_lm"
    if task == "causal_lm":
        return OpenedExplainer(task, GenerationExplainer(open_generator(run, checkpoint, device)))
    if task not in TASKS:
        raise DataError(f"{run}: a {task} run; explain works on {', '.join(TASKS)} runs")
    predictor = RunPredictor(run, checkpoint, device)
    if task == "classification":
        return OpenedExplainer(task, ClassificationExplainer(predictor), predictor)
    return OpenedExplainer(task, EntityExplainer(predictor), predictor)
