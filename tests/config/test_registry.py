"""``Registry.register_module``: a built-in named by its module is imported when first needed, and a
command that never needs it never imports it (the n-gram family's scikit-learn)."""

import subprocess
import sys
import textwrap

import pytest

from lmforge.errors import ConfigError
from lmforge.registry import Registry


def test_a_named_module_registers_when_first_looked_up(tmp_path, monkeypatch):
    registry: Registry[str] = Registry("widget", "widget")
    module = tmp_path / "lmforge_test_widget.py"
    module.write_text(
        textwrap.dedent(
            f"""
            import {__name__} as owner
            owner.REGISTRY.register("late", "the late widget")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "REGISTRY", registry, raising=False)
    registry.register("early", "the early widget")
    registry.register_module("late", "lmforge_test_widget")
    assert "lmforge_test_widget" not in sys.modules
    assert "late" in registry and registry.names() == ["early", "late"] and len(registry) == 2
    assert "lmforge_test_widget" not in sys.modules  # naming and counting import nothing
    assert registry.get("late") == "the late widget"
    assert list(registry) == ["the early widget", "the late widget"]
    with pytest.raises(ConfigError, match=r"widget: unknown widget 'other' \(known: early, late\)"):
        registry.get("other")


def test_training_imports_no_scikit_learn():
    code = "import sys; from lmforge.training.recipe import train; print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_ngram_family_is_found_by_name():
    from lmforge.models.family import FAMILIES

    assert "ngram" in FAMILIES
    assert FAMILIES.get("ngram").load_saved is not None
