"""``keep_freed_memory``: glibc keeps the memory a step frees for the next, unless the user chose
the allocator or its settings."""

import os
import subprocess
import sys

import pytest

CODE = "from lmforge.runtime import keep_freed_memory as k; print(k(), k())"


def _run(**env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    done = subprocess.run([sys.executable, "-c", CODE], env={**clean, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applied_once_unless_the_user_set_the_allocator():
    import platform

    if platform.libc_ver()[0] != "glibc":
        assert _run() == "False False"
        return
    assert _run() == "True True"
    assert _run(MALLOC_TRIM_THRESHOLD_="131072") == "False False"  # the user's own setting stands
    assert _run(LD_PRELOAD="") == "True True"
