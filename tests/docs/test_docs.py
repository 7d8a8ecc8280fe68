"""The README and docs/ stay in step with the code and with themselves: the config reference is the
schema's, the README stays a short front door, every relative link resolves, and mkdocs builds."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CONFIG_PAGE = DOCS / "reference" / "config.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
REGENERATE = "python docs/gen_config_reference.py"

# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def test_config_reference_is_current():
    from lmforge.config.reference import markdown

    text = CONFIG_PAGE.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, f"{CONFIG_PAGE} lost its markers {START} / {END}"
    block = text.split(START)[1].split(END)[0]
    assert block.strip() == markdown().strip(), (
        f"docs/reference/config.md is out of date with the config schema: run `{REGENERATE}`"
    )


def test_generator_script_agrees():
    spec = importlib.util.spec_from_file_location("gen_config_reference", DOCS / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PAGE == CONFIG_PAGE and module.START == START and module.END == END
    assert module.main(["--check"]) == 0, f"run `{REGENERATE}`"


def test_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/ (at most 200)"
    first_block = re.search(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
    assert first_block, "README.md has no command block"
    commands = first_block.group(1)
    assert "./install.sh" in commands and "lmforge demo" in commands
    assert "python3 -m pytest" in text
    # The config reference lives in docs/ now; the README only links to it.
    assert "| `data.train` |" not in text


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = CODE_SPAN.sub("", text)
    return LINK.findall(text)


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a scheme (http:, mailto:) or an anchor on the same page
        file = target.split("#")[0].split("?")[0]
        if not (path.parent / file).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    missing = [p for p in pages if p not in nav]
    assert not missing, f"mkdocs.yml nav lacks {missing}"


def test_mkdocs_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
