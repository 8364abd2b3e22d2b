"""An OpenAI-compatible HTTP API for an exported GPT, on FastAPI and uvicorn, without torch.

The server answers the three routes that OpenAI's client libraries call for text generation:

* ``GET /v1/models``: the one model it serves;
* ``POST /v1/completions``: continue a ``prompt``;
* ``POST /v1/chat/completions``: answer a list of ``messages``;

each with ``"stream": true`` for server-sent events (one ``data: {json}`` event per token,
then ``data: [DONE]``), so that the official ``openai`` client, pointed at
``http://127.0.0.1:PORT/v1``, talks to the course's model as it would to a hosted one.
Generation is :mod:`llmref.onnx_generate` on an ONNX Runtime session (a model exported with a
KV cache, or without).

Sampling: ``temperature`` 0 is greedy decoding (the most likely character each step);
otherwise ``temperature``, ``top_p`` and the non-standard ``top_k`` go to
``llmref.sampling.sample`` with a generator seeded by ``seed`` (fresh entropy without one).
The course GPT is a character model of the Python documentation, not a chat model: a chat
request's messages are joined into one text (each message's content on its own line) which it
continues.

Errors are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx
status: 400 for a malformed or out-of-range request (also a body that is not JSON), 404 for a
model the server does not serve. Each request generates on its own; ONNX Runtime sessions are
safe to run from several threads, so concurrent requests do not share any state but the model.

Run: ``.venv/bin/python -m llmref.serve MODEL.onnx --port 8000``. Hand-written; tests in
tests/test_serve.py.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmref import onnx_generate

DEFAULT_MODEL_NAME = "course-gpt"
MAX_TOKENS_LIMIT = 512            # per request: generation beyond the context recomputes it


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")   # OpenAI clients send fields we do not use
    model: str
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1)
    seed: int | None = None
    stream: bool = False


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1)
    seed: int | None = None
    stream: bool = False


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def _error(status: int, message: str, param=None, code=None, kind="invalid_request_error"):
    return JSONResponse(status_code=status, content={"error": {
        "message": message, "type": kind, "param": param, "code": code}})


def chat_prompt(messages: list[Message]) -> str:
    """The text the model continues for a chat: each message's content on its own line."""
    return "\n".join(m.content for m in messages) + "\n"


def create_app(model_path: str | Path, model_name: str = DEFAULT_MODEL_NAME,
               threads: int | None = None, device: str | None = None) -> FastAPI:
    """A FastAPI app serving the exported model at model_path under the name model_name."""
    model, tokenizer = onnx_generate.load(model_path, device=device, threads=threads)
    app = FastAPI(title="llm-course GPT", version="1")
    app.state.model, app.state.tokenizer, app.state.model_name = model, tokenizer, model_name
    created = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return _error(exc.status, exc.message, exc.param, exc.code, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg')}")
        param = None
        if exc.errors():
            loc = [str(p) for p in exc.errors()[0].get("loc", ()) if p != "body"]
            param = loc[0] if loc else None
        return _error(400, "invalid request: " + "; ".join(problems), param=param)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):   # never a bare 500 page
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(404, f"the model {name!r} does not exist here; this server serves "
                           f"{model_name!r} (GET /v1/models lists it)", "model", "model_not_found")

    def encode(prompt: str, param: str) -> np.ndarray:
        if not prompt:
            raise APIError(400, f"{param} is empty: give the model at least one character", param)
        try:
            return tokenizer.encode(prompt)[None, :]
        except ValueError as exc:
            raise APIError(400, f"{param}: {exc}", param) from None

    def options(req) -> dict:
        if req.temperature == 0:
            return {"greedy": True}
        return {"temperature": req.temperature, "top_k": req.top_k,
                "top_p": None if req.top_p >= 1.0 else req.top_p,
                "rng": np.random.default_rng(req.seed)}

    def tokens(ids: np.ndarray, n: int, opts: dict) -> Iterator[str]:
        for token in onnx_generate.stream(model, ids, n, **opts):
            yield tokenizer.decode(token)

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def sse(events: Iterator[dict]) -> Iterator[str]:
        for event in events:
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": created, "owned_by": "llm-course"}]}

    @app.get("/v1/models/{name}")
    def get_model(name: str):
        check_model(name)
        return {"id": model_name, "object": "model", "created": created, "owned_by": "llm-course"}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest):
        check_model(req.model)
        prompt = req.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise APIError(400, f"prompt: one prompt per request, got a list of {len(prompt)}",
                               "prompt")
            prompt = prompt[0]
        ids = encode(prompt, "prompt")
        opts = options(req)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": model_name}
        if req.stream:
            def events():
                for piece in tokens(ids, req.max_tokens, opts):
                    yield {**head, "choices": [{"text": piece, "index": 0, "logprobs": None,
                                                "finish_reason": None}]}
                yield {**head, "choices": [{"text": "", "index": 0, "logprobs": None,
                                            "finish_reason": "length"}]}
            return StreamingResponse(sse(events()), media_type="text/event-stream")
        text = "".join(tokens(ids, req.max_tokens, opts))
        return {**head, "choices": [{"text": text, "index": 0, "logprobs": None,
                                     "finish_reason": "length"}],
                "usage": usage(ids.shape[1], req.max_tokens)}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        check_model(req.model)
        ids = encode(chat_prompt(req.messages), "messages")
        n = req.max_completion_tokens or req.max_tokens or 16
        opts = options(req)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": model_name}
        if req.stream:
            chunk = {**head, "object": "chat.completion.chunk"}

            def events():
                yield {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "finish_reason": None}]}
                for piece in tokens(ids, n, opts):
                    yield {**chunk, "choices": [{"index": 0, "delta": {"content": piece},
                                                 "finish_reason": None}]}
                yield {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
            return StreamingResponse(sse(events()), media_type="text/event-stream")
        text = "".join(tokens(ids, n, opts))
        return {**head, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "length"}],
                "usage": usage(ids.shape[1], n)}

    return app


class BackgroundServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread, on a free port.

    with BackgroundServer(app) as server: ... server.url is "http://127.0.0.1:PORT/v1".
    """

    def __init__(self, app: FastAPI, port: int = 0, timeout: float = 30.0):
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.timeout = timeout

    def start(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (is the port in use?)")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve an exported GPT with an OpenAI-compatible API")
    parser.add_argument("model", help="the .onnx file (its manifest .json next to it)")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="the model name clients ask for")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    app = create_app(args.model, args.name, threads=args.threads)
    print(f"serving {args.model} as {args.name!r} at http://{args.host}:{args.port}/v1 "
          f"(providers: {app.state.model.providers})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
