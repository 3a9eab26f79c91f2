#!/usr/bin/env python3
"""Record llama.cpp's greedy continuations of plain-text prompts on Gemma-3-270m.

Writes two fixtures into OUT_DIR (tests/fixtures/golden):

- continuation_greedy.gemma-3-270m-q4_k_m.json: the first two sentences of
  tests/fixtures/golden/paragraph.txt (55 tokens) and its first 64 greedy tokens;
- long_greedy.gemma-3-270m-q4_k_m.json: the start of the article in
  tests/fixtures/seed-request.json, cut at a line end so the prompt is longer than
  Gemma 3's 512-position sliding window (about 800 tokens), and its first 32 greedy
  tokens: every step there depends on the window's masking.

Each has the prompt, its ids as llama.cpp tokenizes it (BOS added, as the file's
tokenizer.ggml.add_bos_token asks), the greedy tokens (argmax of the logits, first
maximum on ties) generated token by token after the prompt was decoded as one batch,
llama.cpp's top-5 logits at each of those sequential steps, and its top-5 logits when
the prompt plus the generated tokens are evaluated again as one batch (as
scripts/reference/margins.py does for the chat fixtures). Tests use the two top-5
lists to tell a near-tie from a real divergence.

Needs `pip install llama-cpp-python==0.3.36` (see the DESIGN notes); not part of the
test run.

usage: gemma3_continuation.py MODEL.gguf OUT_DIR
"""
import json
import os
import sys
import urllib.parse

import numpy as np
from llama_cpp import Llama, llama_cpp as C

model_path, out_dir = sys.argv[1:3]
here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "../../tests/fixtures")
settings = dict(n_ctx=1024, n_threads=2, n_batch=512, n_ubatch=512)


def top5(row):
    row = np.asarray(row, dtype=np.float32)
    order = np.argsort(-row, kind="stable")[:5]
    return [[int(t), float(row[t])] for t in order]


def record(prompt_text, n_new, out_name, prompt_source):
    llm = Llama(model_path=model_path, verbose=False, logits_all=False, **settings)
    prompt_ids = llm.tokenize(prompt_text.encode(), add_bos=True, special=True)
    vocab = C.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()

    # Token-by-token greedy generation: the prompt as one batch (n_batch 512, so
    # a longer prompt goes in 512-token pieces), then one token per step.
    llm.reset()
    llm.eval(prompt_ids)
    generated, sequential = [], []
    for step in range(n_new):
        # Without logits_all only the last position's logits are computed.
        row = np.ctypeslib.as_array(C.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()
        tok = int(np.argmax(row))
        generated.append(tok)
        sequential.append({"step": step, "token": tok, "top": top5(row)})
        if C.llama_vocab_is_eog(vocab, tok):
            break
        llm.eval([tok])
    generated_text = llm.detokenize(generated).decode("utf-8", errors="replace")
    del llm

    # The same tokens evaluated as one batch, every position's logits kept.
    llm = Llama(model_path=model_path, verbose=False, logits_all=True, **settings)
    llm.eval(prompt_ids + generated)
    n_prompt = len(prompt_ids)
    batched = []
    for i, want in enumerate(generated):
        batched.append({"step": i, "reference": want, "top": top5(llm.scores[n_prompt - 1 + i])})
    del llm

    json.dump(
        {
            "engine": "llama.cpp via llama-cpp-python 0.3.36 (scripts/reference/gemma3_continuation.py)",
            "model_file": os.path.basename(model_path),
            "model_file_size": os.path.getsize(model_path),
            "settings": {
                "sampler": "greedy (argmax of the logits; first max on ties)",
                **settings,
                "prompt_decoded_as_one_batch": True,
                "max_new_tokens": n_new,
                "stop_on_eog": True,
                "tokenize": {"add_bos": True, "parse_special": True},
            },
            "prompt_source": prompt_source,
            "prompt_text": prompt_text,
            "prompt_ids": prompt_ids,
            "generated_ids": generated,
            "generated_text": generated_text,
            "sequential_note": "top-5 logits at each step of the token-by-token generation that produced generated_ids",
            "sequential": sequential,
            "batched_note": "prompt and generated ids evaluated again as one batch (logits_all); top-5 logits predicting each generated token",
            "batched": batched,
        },
        open(os.path.join(out_dir, out_name), "w"),
        indent=1,
    )
    print(f"{out_name}: {len(prompt_ids)} prompt tokens, {len(generated)} generated: {generated_text!r}")


paragraph = open(os.path.join(fixtures, "golden/paragraph.txt")).read()
first, second, _ = paragraph.split(". ", 2)
record(
    f"{first}. {second}.",
    64,
    "continuation_greedy.gemma-3-270m-q4_k_m.json",
    "the first two sentences of tests/fixtures/golden/paragraph.txt",
)

request = json.load(open(os.path.join(fixtures, "seed-request.json")))
article = urllib.parse.unquote(request["history"]).split("\n\n", 1)[1]
# The first lines of the article up to 4,500 characters, cut after a full line.
long_prompt = article[: article.rindex("\n", 0, 4500)]
record(
    long_prompt,
    32,
    "long_greedy.gemma-3-270m-q4_k_m.json",
    "the article in tests/fixtures/seed-request.json (after the question and blank line), "
    "cut at the last line end before character 4500",
)
