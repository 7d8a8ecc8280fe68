"""Every package lmforge imports is declared in pyproject.toml, and the lock that
``./install.sh --locked`` installs pins all of them (and their whole tree) with hashes (issue 32)."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "lmforge"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.MULTILINE)
# Installed by install.sh itself: torch (pinned there) and thulac (with --no-deps: its licence is
# for research only, so it stays out of pyproject's extras; model.segmenter: thulac requires it).
NOT_IN_PYPROJECT = {"torch", "thulac"}
NOT_LOCKED = {"torch", "deepspeed"}  # torch: installed by install.sh; deepspeed: for GPUs, not installed


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    return {_normal(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in specs}


def _imported_top_modules() -> set[str]:
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    # require("module", ...): optional imports by name
    for path in SRC.rglob("*.py"):
        names.update(m.split(".")[0] for m in re.findall(r"require\(\s*\"([A-Za-z0-9_.]+)\"", path.read_text()))
    return {n for n in names if n != "lmforge" and n not in sys.stdlib_module_names}


def _pins(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    return {_normal(m.group(1)): m.group(2) for m in PIN.finditer(text)}


def test_every_imported_package_is_declared():
    providers = packages_distributions()
    declared = _declared() | NOT_IN_PYPROJECT
    missing = []
    for module in sorted(_imported_top_modules()):
        dists = {_normal(d) for d in providers.get(module, [])} or {_normal(module)}  # not installed here
        if not dists & declared:
            missing.append(f"{module} (from {', '.join(sorted(dists))})")
    assert missing == [], "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_the_lock_pins_every_declared_package_with_hashes():
    lock = ROOT / "requirements" / "lock.txt"
    text = lock.read_text(encoding="utf-8")
    pins = _pins(lock)
    names = re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.MULTILINE)
    assert len(pins) == len(names) > 100, "every entry is name==version with at least one sha256"
    assert not {"torch", "triton"} & set(pins) and not any(n.startswith(("nvidia-", "cuda-")) for n in pins)
    assert _declared() - NOT_LOCKED - set(pins) == set()


def test_the_bundled_lock_matches_install_sh():
    script = (ROOT / "install.sh").read_text(encoding="utf-8")
    unlocked = dict(re.findall(r"([a-z0-9][a-z0-9_.-]*)==([0-9][^\s\\\"]*)", script.split("--no-deps gt-", 1)[1]))
    unlocked = {_normal("gt-" + k if k.startswith("all-minilm") else k): v for k, v in unlocked.items()}
    assert _pins(ROOT / "requirements" / "bundled.txt") == unlocked


def test_install_sh_refuses_an_unknown_option_before_installing_anything():
    import subprocess

    done = subprocess.run(["bash", str(ROOT / "install.sh"), "--lock"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown option '--lock'" in done.stderr and done.stdout == ""
