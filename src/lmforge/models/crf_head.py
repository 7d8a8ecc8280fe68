"""Put a CRF layer on a token-classification model, and find or restore it.

The CRF is a submodule named ``crf`` of the Hugging Face model, so checkpoints and
``save_pretrained`` carry its three tensors (``crf.transitions``, ``crf.start_transitions``,
``crf.end_transitions``) in the same safetensors file; plain ``transformers`` loads the folder as an
ordinary ``AutoModelForTokenClassification`` and ignores them. The transition constraints come from
the tag scheme and are rebuilt, never stored.
"""

from pathlib import Path

from torch import nn

from lmforge.data.tagging import allowed_transitions
from lmforge.errors import ModelError
from lmforge.models.crf import CRF

PREFIX = "crf."


def attach_crf(model: nn.Module, labels: list[str], scheme: str) -> CRF:
    """Give ``model`` a CRF over ``labels`` that can only make the scheme's valid transitions."""
    crf = CRF(len(labels), allowed_transitions(labels, scheme))
    model.crf = crf
    # Tell transformers the extra tensors are expected when a saved folder is loaded back.
    ignore = list(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])
    model._keys_to_ignore_on_load_unexpected = ignore + [r"^crf\."]
    return crf


def find_crf(model: nn.Module) -> CRF | None:
    """The CRF of a (possibly PEFT-wrapped) model, if it has one."""
    for module in model.modules():
        if isinstance(module, CRF):
            return module
    return None


def crf_of(model: nn.Module) -> CRF:
    """The CRF of a model that was built with one (``head.crf``)."""
    crf = find_crf(model)
    if crf is None:
        raise ValueError("this model has no CRF (head.crf was off when it was trained)")
    return crf


def load_crf_weights(crf: CRF, folder: Path) -> None:
    """Fill ``crf`` from the ``crf.*`` tensors of the safetensors files in ``folder``."""
    from safetensors import safe_open

    state = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith(PREFIX):
                    state[key[len(PREFIX) :]] = handle.get_tensor(key)
    missing = {name for name, _ in crf.named_parameters()} - set(state)
    if missing:
        raise ModelError(
            f"{folder}: the run used a CRF head but the saved model has no "
            f"{', '.join(sorted(PREFIX + m for m in missing))}"
        )
    crf.load_state_dict(state, strict=False)
