#!/usr/bin/env python3
"""llama-bench-style pp/tg throughput of llama.cpp on a GGUF file, for comparison
with `abridge bench` in the same run. Needs llama-cpp-python (see DESIGN notes).

usage: llama_bench.py MODEL.gguf [--pp 512] [--tg 128] [--depth 0] [--threads 2] [--reps 3]
--depth N fills the context with N tokens before each pp and tg run (pp and tg
at depth, as llama-bench's and `abridge bench`'s `-d N`).
Prints one JSON object: tokens/s of each repetition and the medians.
"""
import argparse
import json
import statistics
import time

from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--pp", type=int, default=512)
ap.add_argument("--tg", type=int, default=128)
ap.add_argument("--depth", type=int, default=0)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=3)
args = ap.parse_args()

llm = Llama(model_path=args.model, n_ctx=args.depth + 1 + args.pp + args.tg + 8, n_threads=args.threads,
            n_threads_batch=args.threads, n_batch=512, n_ubatch=512, verbose=False)
n_vocab = llm.n_vocab()
prompt = [(i * 7919) % (n_vocab - 1000) + 500 for i in range(args.pp)]
pp, tg = [], []
for _ in range(args.reps):
    if args.pp > 0:
        llm.reset()
        if args.depth > 0:
            llm.eval([(i * 7919) % (n_vocab - 1000) + 500 for i in range(args.depth)])
        t = time.perf_counter()
        llm.eval(prompt)
        pp.append(args.pp / (time.perf_counter() - t))
    llm.reset()
    context = [(i * 7919) % (n_vocab - 1000) + 500 for i in range(args.depth + 1)]
    tok = context[0]
    llm.eval(context)
    t = time.perf_counter()
    for _ in range(args.tg):
        llm.eval([tok])
    tg.append(args.tg / (time.perf_counter() - t))
print(json.dumps({"engine": "llama.cpp", "model": args.model, "threads": args.threads,
                  "depth": args.depth, "pp": pp, "tg": tg,
                  "pp_median": statistics.median(pp) if pp else None, "tg_median": statistics.median(tg)}))
