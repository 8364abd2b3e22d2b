"""llmref.serve: the OpenAI-compatible server, called with the official openai client.

One server (the course GPT exported with a KV cache) runs in a background thread on a free
port for the whole module; answers are compared with llmref.onnx_generate run directly.
"""
from __future__ import annotations

import concurrent.futures

import httpx
import openai
import pytest

from export_fixtures import course_onnx
from llmref import onnx_generate, serve

pytestmark = pytest.mark.slow   # an export of the course GPT, then a server (~10 s in all)

NAME = "course-gpt"


@pytest.fixture(scope="module")
def server():
    app = serve.create_app(course_onnx(cached=True), NAME, threads=1)
    with serve.BackgroundServer(app) as running:
        running.model, running.tokenizer = app.state.model, app.state.tokenizer
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="not-needed", max_retries=0, timeout=60)


def direct(server, prompt: str, n: int) -> str:
    return onnx_generate.complete(server.model, server.tokenizer, prompt, n, greedy=True)


def test_models_lists_the_one_model(client):
    assert [m.id for m in client.models.list().data] == [NAME]


def test_completion_streamed_and_not_equal_direct_greedy_generation(server, client):
    prompt = "The return statement"
    expected = direct(server, prompt, 30)
    answer = client.completions.create(model=NAME, prompt=prompt, max_tokens=30, temperature=0)
    assert answer.choices[0].text == expected
    assert answer.usage.completion_tokens == 30 and answer.usage.prompt_tokens == len(prompt)
    pieces = [c.choices[0].text for c in client.completions.create(
        model=NAME, prompt=prompt, max_tokens=30, temperature=0, stream=True)]
    assert len(pieces) > 30 and "".join(pieces) == expected      # one event per character


def test_chat_streamed_and_not_equal_direct_generation(server, client):
    messages = [{"role": "user", "content": "How do I open a file?"}]
    expected = direct(server, serve.chat_prompt([serve.Message(**m) for m in messages]), 25)
    answer = client.chat.completions.create(model=NAME, messages=messages, max_tokens=25,
                                            temperature=0)
    assert answer.choices[0].message.content == expected
    assert answer.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=NAME, messages=messages, max_tokens=25,
                                            temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == expected


def test_sampling_with_a_seed_is_reproducible(client):
    ask = dict(model=NAME, prompt="for x in", max_tokens=20, temperature=1.0, top_p=0.9, seed=3)
    first, second = (client.completions.create(**ask).choices[0].text for _ in range(2))
    assert first == second and len(first) == 20


@pytest.mark.parametrize("body, status, phrase", [
    ({"model": NAME, "max_tokens": 5}, 400, "prompt"),
    ({"model": NAME, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": NAME, "prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ({"model": NAME, "prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"model": NAME, "prompt": ""}, 400, "prompt is empty"),
    ({"model": NAME, "prompt": "caf\u00e9 \u2603"}, 400, "not in this tokenizer's vocabulary"),
    ({"model": "gpt-4o", "prompt": "x"}, 404, "'gpt-4o' does not exist"),
], ids=["missing prompt", "max_tokens 0", "max_tokens too large", "negative temperature",
        "empty prompt", "unknown character", "unknown model"])
def test_bad_requests_get_a_4xx_with_a_message(server, body, status, phrase):
    response = httpx.post(f"{server.url}/completions", json=body, timeout=30)
    assert response.status_code == status
    assert phrase in response.json()["error"]["message"]


def test_a_body_that_is_not_json_gets_a_400(server):
    response = httpx.post(f"{server.url}/completions", content=b"{not json",
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_chat_errors_reach_the_client_as_openai_errors(client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=NAME, messages=[])


def test_concurrent_requests_do_not_mix_outputs(server, client):
    prompts = ["import os", "class Foo", "while True", "The with statement", "lambda x", "x = [1"]
    expected = {p: direct(server, p, 25) for p in prompts}

    def ask(prompt: str) -> str:
        stream = client.completions.create(model=NAME, prompt=prompt, max_tokens=25,
                                           temperature=0, stream=True)
        return "".join(c.choices[0].text for c in stream)

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        got = dict(zip(prompts, pool.map(ask, prompts)))
    assert got == expected
