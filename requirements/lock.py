"""Regenerate requirements/lock.txt and requirements/bundled.txt (see README.md here) with uv's
resolver (``pip install uv``), pinned to the versions installed in this environment (the ones the
tests passed with) and hashed from PyPI. torch, triton and NVIDIA's CUDA wheels are left out:
install.sh installs ``torch==2.13.0`` itself.

    python3 requirements/lock.py
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXTRAS = ("serve", "dev", "export", "zh", "tune", "llama", "track", "mask")
LEFT_OUT = re.compile(r"^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==", re.MULTILINE)
BUNDLED = re.compile(r"--no-deps ((?:[A-Za-z0-9_.-]+==[^\s\\]+[\s\\]+)+)")


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("lock.py: needs uv (pip install uv)")
    return uv


def _compile(uv: str, args: list[str], output: Path, left_out: list[str]) -> str:
    command = [uv, "pip", "compile", "--generate-hashes", "--no-annotate", "--python-version", "3.11"]
    command += ["--custom-compile-command", "python3 requirements/lock.py"]
    command += ["--python-platform", "x86_64-manylinux_2_28", "--index-url", "https://pypi.org/simple"]
    command += [arg for name in left_out for arg in ("--no-emit-package", name)]
    subprocess.run([*command, *args, "-o", str(output)], check=True, cwd=ROOT)
    return output.read_text(encoding="utf-8")


def main() -> None:
    uv = _uv()
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    pins = [line for line in frozen.splitlines() if "==" in line and not line.startswith(("torch==", "lmforge=="))]
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
        args = ["pyproject.toml", *[a for e in EXTRAS for a in ("--extra", e)], "--constraint", str(constraints)]
        first = _compile(uv, args, Path(tmp) / "first.txt", ["torch"])
        left_out = sorted({"torch", *(m.group(1) for m in LEFT_OUT.finditer(first))})
        _compile(uv, args, HERE / "lock.txt", left_out)
        # the data and model packages install.sh installs with --no-deps, at its pins
        listed = BUNDLED.search((ROOT / "install.sh").read_text(encoding="utf-8"))
        assert listed is not None, "install.sh names its --no-deps packages"
        wanted = Path(tmp) / "bundled.in"
        wanted.write_text("\n".join(re.findall(r"[A-Za-z0-9_.-]+==[^\s\\]+", listed.group(1))) + "\n")
        _compile(uv, [str(wanted), "--no-deps"], HERE / "bundled.txt", [])
    print(f"wrote {HERE / 'lock.txt'} and {HERE / 'bundled.txt'} (left out: {', '.join(left_out)})")


if __name__ == "__main__":
    main()
