#!/usr/bin/env python3
"""llama.cpp's logits after a 64-token prompt on a reduced synthetic Mistral-7B.

Write the file first, exactly as tests/synth.rs does:
  abridge synth mistral-7b-instruct-v0.2 --layers 2 --seed 7 \
      --tokenizer ~/.cache/abridge/models/mistral-tokenizer.model.v1 -o /tmp/m2l.gguf
then: synth_logits.py /tmp/m2l.gguf OUT.json
Records the logits of the last position for llama.cpp's top 20 tokens and for every
320th token id, so a test can compare abridge's forward pass on the same file.
Needs llama-cpp-python 0.3.36 (see DESIGN notes); not part of the test run.
"""
import json
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent.parent
golden = json.load(open(ROOT / "tests/fixtures/golden/tokenize.mistral-7b-instruct-v0.2-synthetic-q4_k_m.json"))
prompt = golden["ids_add_special"][:64]
llm = Llama(model_path=sys.argv[1], n_ctx=128, n_threads=2, n_batch=512, logits_all=True, verbose=False)
llm.eval(prompt)
row = np.array(llm.scores[len(prompt) - 1], dtype=np.float32)
ids = sorted(set(int(i) for i in np.argsort(-row, kind="stable")[:20]) | set(range(0, len(row), 320)))
json.dump({
    "engine": "llama.cpp via llama-cpp-python 0.3.36",
    "model_file": "abridge synth mistral-7b-instruct-v0.2 --layers 2 --seed 7 (real tokenizer.model.v1)",
    "prompt_ids": prompt,
    "logits_std": float(row.std()),
    "logits": {str(i): float(row[i]) for i in ids},
}, open(sys.argv[2], "w"), indent=1)
