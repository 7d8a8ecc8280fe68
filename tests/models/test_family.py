"""The model-family and saved-format registries: what registers, in which order, and the errors a
wrong name gets."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.config.model_spec import MODEL_SPECS, ModelSpec
from lmforge.errors import ModelError
from lmforge.models import load_model, load_saved
from lmforge.models.family import FAMILIES, SAVED_FORMATS, ModelFamily, SavedFormat, check_model
from lmforge.tracking.run_record import ModelRecord, RunRecord

MODELS = Path(__file__).resolve().parents[2] / "src" / "lmforge" / "models"


def test_importing_the_family_module_registers_the_builtin_families():
    code = "from lmforge.models.family import FAMILIES, SAVED_FORMATS; print(FAMILIES.names(), SAVED_FORMATS.names())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['transformer', 'lstm', 'ngram'] ['int8', 'onnx']"


def test_every_family_has_a_spec_and_every_spec_a_family():
    assert sorted(FAMILIES.names()) == sorted(MODEL_SPECS)
    for name, spec in MODEL_SPECS.items():
        assert spec().family == name


def test_unknown_family_names_the_known_ones():
    with pytest.raises(
        ModelError, match=r"^model.family: unknown model family 'rnn' \(known: lstm, ngram, transformer\)$"
    ):
        load_model(ModelSpec(family="rnn"), "sequence_classification", ["a", "b"], [])
    with pytest.raises(ModelError, match="model.family: unknown model family 'rnn'"):
        check_model(ModelSpec(family="rnn"))


def test_a_run_saved_by_an_unknown_family_names_the_folder(tmp_path):
    with pytest.raises(ModelError, match=f"^{tmp_path}: saved with model family 'rnn'"):
        load_saved(
            tmp_path, RunRecord(task="classification", head="sequence_classification", model=ModelRecord(family="rnn"))
        )


def test_registering_a_name_twice_fails_and_keeps_the_first():
    first = FAMILIES.get("lstm")
    other = ModelFamily(build=first.build, load_saved=first.load_saved)
    with pytest.raises(ValueError, match="model family 'lstm' is registered twice"):
        FAMILIES.register("lstm", other)
    assert FAMILIES.get("lstm") is first
    with pytest.raises(ValueError, match="saved-model format 'onnx' is registered twice"):
        SAVED_FORMATS.register("onnx", SavedFormat(detect=lambda folder: False, load=first.load_saved))
    # Registering the very same record again (a module imported twice) is harmless.
    assert FAMILIES.register("lstm", first) is first


def test_saved_formats_are_tried_before_the_family_first_match_wins(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "model_int8.safetensors").write_bytes(b"")
    assert [name for name, f in SAVED_FORMATS.items() if f.detect(tmp_path)] == ["int8", "onnx"]


def test_transformer_check_names_a_missing_folder(tmp_path):
    from lmforge.config.model_spec import TransformerSpec

    with pytest.raises(ModelError, match="no such folder"):
        check_model(TransformerSpec(path="someone/model"))
    check_model(TransformerSpec())  # from scratch: nothing to check


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, inside a function) for every import of an lmforge module in ``path``."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("lmforge"):
                found.append((child.module, inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.startswith("lmforge"))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def test_the_registry_module_imports_no_family():
    imported = {module for module, _ in _imports(MODELS / "family.py")}
    assert not {m for m in imported if m.startswith("lmforge.models")}, imported


def test_models_import_lmforge_modules_at_the_top_only_and_from_below():
    allowed = ("config", "errors", "registry", "paths", "_optional", "runtime")
    allowed += ("data", "tokenization", "evaluation", "tracking", "models")
    for path in sorted(MODELS.rglob("*.py")):
        for module, in_function in _imports(path):
            assert not in_function, f"{path.name}: imports {module} inside a function"
            assert module.split(".")[1] in allowed, f"{path.name}: imports {module} from a layer above models"
