"""Chat with a served SmolVLM2 model: llama-server's OpenAI-compatible API, or Ollama through its official client.

One interface for both, used by `smoke` and by the examples: `backend.chat([Message...], max_tokens)`
returns the answer with the backend's own timings. Replies are streamed, so the time to the first token
is measured where the client sees it.

A message is a sequence of parts, text and images, in order. llama-server gets them in that order (each
image where it stands, as SmolVLM2's video prompt needs); Ollama takes a message's images apart from its
text and puts them first, as its API does.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from smolconv.core.errors import SmolconvError
from smolconv.media.images import ImageFile
from smolconv.runtime.auth import API_KEY_ENV
from smolconv.runtime.ollama_api import OllamaHTTP, ollama_host

# Greedy and seeded by default, so a rerun asks the same thing and gets the same answer. repeat_penalty is
# the `general` preset's, which is what an Ollama user of the packaged model gets; llama.cpp applies it to the
# last REPEAT_LAST_N tokens (its default, and the in-process runtimes'). `ask --greedy` and `eval` use GREEDY.
SAMPLING = {"temperature": 0.0, "seed": 0, "repeat_penalty": 1.1}
GREEDY = {"temperature": 0.0, "seed": 0, "repeat_penalty": 1.0}
REPEAT_LAST_N = 64


@dataclass(frozen=True)
class Message:
    role: str                                 # system, user or assistant
    parts: tuple[str | ImageFile, ...]
    video: bool = False                       # its images are a video's frames (one tile each where that is chosen)

    @classmethod
    def of(cls, role: str, text: str = "", images: tuple[ImageFile, ...] | list[ImageFile] = ()) -> Message:
        """Images first, then the text: how a chat client sends "this picture, and my question"."""
        return cls(role, (*images, text) if text or not images else tuple(images))

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def images(self) -> list[ImageFile]:
        return [p for p in self.parts if isinstance(p, ImageFile)]


@dataclass
class Answer:
    text: str
    finish_reason: str | None      # "stop" (end of utterance or a stop string) or "length" (the limit)
    prompt_tokens: int | None
    completion_tokens: int | None
    wall_s: float
    ttft_s: float | None           # time to the first streamed token (to the end, for an empty answer)
    prompt_tps: float | None
    decode_tps: float | None
    cached_tokens: int | None = None
    image_encode_s: float | None = None  # neither backend reports it apart from prompt time
    stats: dict = field(default_factory=dict)  # the backend's own numbers, as it gave them


# Called with each piece of the answer as it streams in (`smolconv ask` prints them).
OnText = Callable[[str], None]


class BackendError(Exception):
    """The backend refused or failed one request (the case fails; the suite goes on)."""


class Backend(Protocol):
    name: str

    def info(self) -> dict: ...

    def chat(self, messages: list[Message], max_tokens: int, on_text: OnText | None = None) -> Answer: ...


class LlamaServerBackend:
    """llama-server's OpenAI-compatible chat endpoint, streamed (for the time to the first token)."""

    name = "llama-server"

    def __init__(self, url: str, timeout: float = 900, sampling: dict | None = None, n_ctx: int | None = None,
                 api_key: str | None = None):
        self.url = url.rstrip("/")
        self.n_ctx = n_ctx  # known when smolconv started the server
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10), headers=headers)
        self.sampling = SAMPLING if sampling is None else sampling
        self.requests = 0

    def info(self) -> dict:
        try:
            response = self.client.get(f"{self.url}/props")
            if response.status_code == 401:
                given = "it refused the one given" if "Authorization" in self.client.headers else "none was given"
                raise SmolconvError(f"the llama-server at {self.url} wants an API key, and {given}",
                                    f"set {API_KEY_ENV} (or pass --api-key-file FILE) with the key the server was "
                                    "started with")
            props = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SmolconvError(f"no llama-server answers at {self.url} ({exc})",
                                "start one with `smolconv serve`, or leave out --url") from None
        settings = props.get("default_generation_settings", {})
        return {"url": self.url, "build": props.get("build_info"), "model": props.get("model_path"),
                "n_ctx": settings.get("n_ctx") or props.get("n_ctx"),
                "vision": (props.get("modalities") or {}).get("vision")}

    @staticmethod
    def content(message: Message) -> list[dict] | str:
        if not message.images:
            return message.text
        parts = []
        for part in message.parts:
            if isinstance(part, str):
                if part:
                    parts.append({"type": "text", "text": part})
                continue
            data, mime = (part.as_png(), "image/png") if part.format == "WEBP" else (part.data, part.mime)
            parts.append({"type": "image_url",
                          "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}})
        return parts

    def chat(self, messages, max_tokens: int, on_text: OnText | None = None) -> Answer:
        self.requests += 1
        body = {
            "messages": [{"role": m.role, "content": self.content(m)} for m in messages],
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True},
            **self.sampling,
        }
        text, finish, usage, timings = [], None, {}, {}
        start = time.monotonic()
        first = None
        try:
            with self.client.stream("POST", f"{self.url}/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise BackendError(_error_text(response))
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise BackendError(str(chunk["error"].get("message", chunk["error"])))
                    for choice in chunk.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            text.append(piece)
                            first = first or time.monotonic()
                            if on_text:
                                on_text(piece)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                            first = first or time.monotonic()
                    usage = chunk.get("usage") or usage
                    timings = chunk.get("timings") or timings
        except httpx.HTTPError as exc:
            raise BackendError(f"request failed: {exc}") from None
        wall = time.monotonic() - start
        return Answer(
            text="".join(text), finish_reason=finish,
            prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
            wall_s=wall, ttft_s=(first - start) if first else None,
            # llama-server's own rates. The first generated token comes out of the prompt pass, so one token
            # has no decode time and llama-server reports a rate of 0: that is "unknown", not 0.
            prompt_tps=timings.get("prompt_per_second") or None,
            decode_tps=timings.get("predicted_per_second") or None,
            cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            stats={"usage": usage, "timings": timings},
        )


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except ValueError:
        message = response.text[:200]
    return f"HTTP {response.status_code}: {message}"


class OllamaBackend:
    """Ollama's `/api/chat` through the official client, streamed; images go as raw bytes (base64 on the wire)."""

    name = "ollama"

    def __init__(self, model: str, host: str | None = None, timeout: float = 900, sampling: dict | None = None):
        import ollama

        self.model = model
        self.host = host or ollama_host()
        self.client = ollama.Client(host=self.host, timeout=timeout)
        self.sampling = SAMPLING if sampling is None else sampling
        self.sampling_given = sampling is not None  # then all of it is sent, over the Modelfile's settings
        self.requests = 0

    def info(self) -> dict:
        import ollama

        with OllamaHTTP(self.host) as api:
            version = api.version()
        try:
            shown = self.client.show(self.model)
        except ollama.ResponseError as exc:
            raise SmolconvError(f"Ollama at {self.host} has no model {self.model} ({exc.error})",
                                "create it with `smolconv package --create`, or check the tag") from None
        parameters = shown.parameters or ""
        match = re.search(r"^num_ctx\s+(\d+)", parameters, re.MULTILINE)
        return {"url": self.host, "ollama": version, "model": self.model,
                "n_ctx": int(match.group(1)) if match else None,
                "vision": "vision" in (shown.capabilities or [])}

    @staticmethod
    def content(message: Message) -> str:
        """The message's text. Images that stand after text (a video's frames) are marked `[img]` where they
        stand: Ollama's prompt code (server/prompt.go) puts a message's images at its `[img]` markers, in order;
        without markers it puts them all before the text, as a chat client's "this picture, and my question"."""
        seen_text = False
        interleaved = False
        for part in message.parts:
            if isinstance(part, str):
                seen_text = seen_text or bool(part)
            elif seen_text:
                interleaved = True
        if not interleaved:
            return message.text
        return "".join(p if isinstance(p, str) else "[img]" for p in message.parts)

    def chat(self, messages, max_tokens: int, on_text: OnText | None = None) -> Answer:
        import ollama

        self.requests += 1
        wire = []
        for m in messages:
            message = {"role": m.role, "content": self.content(m)}
            if m.images:
                message["images"] = [ollama.Image(value=image.data) for image in m.images]
            wire.append(message)
        # Unless sampling was given, the other settings come from the model's Modelfile (its preset), as for any
        # Ollama user.
        sent = self.sampling if self.sampling_given else {k: self.sampling[k] for k in ("temperature", "seed")
                                                           if k in self.sampling}
        options = {"num_predict": max_tokens, **sent}
        text, final = [], None
        start = time.monotonic()
        first = None
        try:
            for chunk in self.client.chat(model=self.model, messages=wire, stream=True, options=options):
                piece = chunk.message.content if chunk.message else ""
                if piece:
                    text.append(piece)
                    first = first or time.monotonic()
                    if on_text:
                        on_text(piece)
                if chunk.done:
                    first = first or time.monotonic()
                    final = chunk
        except ollama.ResponseError as exc:
            raise BackendError(f"HTTP {exc.status_code}: {exc.error}") from None
        except (httpx.HTTPError, ConnectionError) as exc:
            raise BackendError(f"request failed: {exc}") from None
        wall = time.monotonic() - start
        if final is None:
            raise BackendError("the stream ended without a final (done) message")
        stats = {k: getattr(final, k, None) for k in ("done_reason", "total_duration", "load_duration",
                                                      "prompt_eval_count", "prompt_eval_duration",
                                                      "eval_count", "eval_duration")}
        return Answer(
            text="".join(text), finish_reason=final.done_reason,
            prompt_tokens=final.prompt_eval_count, completion_tokens=final.eval_count,
            wall_s=wall, ttft_s=(first - start) if first else None,
            prompt_tps=_rate(final.prompt_eval_count, final.prompt_eval_duration),
            decode_tps=_rate(final.eval_count, final.eval_duration),
            stats=stats,
        )


def _rate(count: int | None, duration_ns: int | None) -> float | None:
    return count / (duration_ns / 1e9) if count and duration_ns else None
