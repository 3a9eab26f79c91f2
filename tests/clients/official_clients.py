"""Ollama's and OpenAI's official Python clients against `abridge serve`.

Usage: official_clients.py BASE_URL MODEL SEED_REQUEST_JSON

Run by crates/abridge-cli/tests/serve.rs with the packages that
scripts/python-clients installs; every check asserts, and the last line
printed says all passed.
"""
import json
import sys
import urllib.parse

import ollama
import openai

url, model, seed_path = sys.argv[1:4]
client = ollama.Client(host=url)

# Model listing and details.
names = [m.model for m in client.list().models]
assert any(n.startswith("smollm2") for n in names), names
shown = client.show(model)
assert shown.details.family == "llama", shown.details
assert shown.details.quantization_level == "Q4_1", shown.details
print("list, show: ok")

# Chat, whole and streamed: the same greedy answer.
question = [{"role": "user", "content": "What is the capital of France?"}]
whole = client.chat(model=model, messages=question, options={"num_predict": 32})
assert whole.done and "Paris" in whole.message.content, whole
assert whole.eval_count and whole.eval_count > 0, whole
pieces = list(client.chat(model=model, messages=question, stream=True, options={"num_predict": 32}))
assert len(pieces) > 2, pieces
assert "".join(p.message.content for p in pieces) == whole.message.content
assert pieces[-1].done and pieces[-1].done_reason in ("stop", "length"), pieces[-1]
print("chat:", whole.message.content.strip()[:80])

# Generate.
generated = client.generate(model=model, prompt="What is the capital of France?", options={"num_predict": 32})
assert generated.done and "Paris" in generated.response, generated
print("generate: ok")

# A JSON-format request: the reply parses as JSON.
asked = client.chat(
    model=model,
    messages=[{"role": "user", "content": 'Describe a person called Ann who is 30, as a JSON object with the keys "name" and "age".'}],
    format="json",
    options={"num_predict": 64},
)
value = json.loads(asked.message.content)
print("json format:", value)

# The loaded model is listed by ps.
assert any(m.model.startswith("smollm2") for m in client.ps().models), client.ps()

# The seed request, replayed through ollama.chat with its system text and
# question: a summary of the article.
with open(seed_path) as f:
    seed = json.load(f)
history = urllib.parse.unquote(seed["history"]).replace("\r\n", "\n")
question_text, article = history.split("\n\n", 1)
at = article.rfind("\n\n ")
if at >= 0:
    article = article[:at]
reply = client.chat(
    model=model,
    messages=[
        {"role": "system", "content": seed["systemText"]},
        {"role": "user", "content": question_text + "\n\n" + article},
    ],
    options={"num_predict": 200},
)
summary = reply.message.content
words = summary.split()
assert len(words) >= 20, summary
# The article's own terms: a reply about something else names none of them.
terms = ("Azure", "OpenAI", "Well-Architected", "Provisioned Throughput", "PTU", "gateway")
assert any(term in summary for term in terms), summary
assert reply.prompt_eval_count > 3000, reply.prompt_eval_count
print("seed summary:", " ".join(words[:40]), "…")

# OpenAI's client on /v1.
oa = openai.OpenAI(base_url=url + "/v1", api_key="abridge")
assert any(m.id.startswith("smollm2") for m in oa.models.list().data)
completion = oa.chat.completions.create(model=model, messages=question, max_tokens=32)
content = completion.choices[0].message.content
assert "Paris" in content, completion
assert completion.usage.completion_tokens > 0, completion.usage
streamed = oa.chat.completions.create(model=model, messages=question, max_tokens=32, stream=True)
text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
assert text == content, (text, content)
print("openai: ok")

# Errors arrive as the clients' own exceptions, with the server's message.
try:
    client.chat(model="no-such-model", messages=question)
    raise AssertionError("an unknown model was accepted")
except ollama.ResponseError as e:
    assert e.status_code == 404 and "not found" in e.error, e
print("all client checks passed")
