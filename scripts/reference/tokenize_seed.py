#!/usr/bin/env python3
"""llama.cpp's token ids for the seed article (the text of tests/fixtures/seed-request.json
between the question and the saved answer), for each model's vocabulary.

usage: tokenize_seed.py MODEL.gguf NAME   -> tests/fixtures/golden/tokenize_seed.NAME.json
Needs llama-cpp-python 0.3.36 (see DESIGN notes); not part of the test run.
"""
import json
import sys
import urllib.parse
from pathlib import Path

from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent.parent
request = json.load(open(ROOT / "tests/fixtures/seed-request.json"))
history = urllib.parse.unquote(request["history"]).replace("\r\n", "\n")
_, rest = history.split("\n\n", 1)
article = rest[: rest.rfind("\n\n ")].strip()
llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
ids = llm.tokenize(article.encode(), add_bos=False, special=False)
out = ROOT / f"tests/fixtures/golden/tokenize_seed.{sys.argv[2]}.json"
json.dump({
    "engine": "llama.cpp via llama-cpp-python 0.3.36",
    "text": "the article of tests/fixtures/seed-request.json (as abridge's SavedRequest extracts it)",
    "text_chars": len(article),
    "ids": ids,
}, open(out, "w"))
print(out, len(ids))
