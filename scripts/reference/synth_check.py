#!/usr/bin/env python3
"""Check that llama.cpp loads a synthetic checkpoint written by `abridge synth`.

Loads the file with llama.cpp (verbose, so its loader prints the metadata, tensor
types and file type it sees), tokenizes `tests/fixtures/golden/paragraph.txt` and
compares the ids with the golden tokenization of the synthetic Mistral file, then
evaluates the first 16 of those tokens and prints the top five logits, to compare
with abridge's forward pass on the same file (random weights: only agreement
between the two engines means anything). Needs `pip install llama-cpp-python==0.3.36`
(see DESIGN notes); not part of the test run.

usage: synth_check.py SYNTHETIC.gguf
"""
import json
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = ROOT / "tests/fixtures/golden/tokenize.mistral-7b-instruct-v0.2-synthetic-q4_k_m.json"

llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, logits_all=True, verbose=True)
golden = json.load(open(GOLDEN))
ids = llm.tokenize(golden["text"].encode(), add_bos=True)
print("tokenization equals the golden ids_add_special:", ids == golden["ids_add_special"])
llm.eval(golden["ids_add_special"][:16])
row = np.array(llm.scores[15], dtype=np.float32)
top = np.argsort(-row, kind="stable")[:5]
print("finite logits:", bool(np.isfinite(row).all()), "std:", float(row.std()))
print("top 5 after 16 tokens:", [(int(i), round(float(row[i]), 3)) for i in top])
