#!/usr/bin/env python3
"""Record llama.cpp's teacher-forced logits margins for a chat_greedy fixture.

For each of the reference's generated tokens, feeds the prompt plus the reference
tokens so far and records llama.cpp's top two candidates and their logits. Tests use
the margins to tell a near-tie (where two kernels may rank differently) from a real
divergence. Needs `pip install llama-cpp-python==0.3.36` (see DESIGN notes); not part
of the test run.

usage: margins.py MODEL.gguf tests/fixtures/golden/chat_greedy.X.json OUT.json
"""
import json
import sys

import numpy as np
from llama_cpp import Llama

model_path, fixture_path, out_path = sys.argv[1:4]
fixture = json.load(open(fixture_path))
llm = Llama(model_path=model_path, n_ctx=1024, n_threads=2, n_batch=512, logits_all=True, verbose=False)
tokens = fixture["prompt_ids"] + fixture["generated_ids"]
llm.eval(tokens)
n_prompt = len(fixture["prompt_ids"])
steps = []
for i, want in enumerate(fixture["generated_ids"]):
    row = np.array(llm.scores[n_prompt - 1 + i], dtype=np.float32)
    order = np.argsort(-row, kind="stable")[:5]
    steps.append({
        "step": i,
        "reference": want,
        "top": [[int(t), float(row[t])] for t in order],
    })
json.dump({
    "engine": "llama.cpp via llama-cpp-python 0.3.36",
    "model_file": fixture["model_file"],
    "fixture": fixture_path.split("/")[-1],
    "note": "prompt and reference tokens evaluated as one batch; top-5 logits at each generated step",
    "steps": steps,
}, open(out_path, "w"), indent=1)
