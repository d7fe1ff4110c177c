"""The TEMPLATE, rendered by Go's own text/template with Ollama's data, equals SmolVLM2's HF chat template."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from smolconv.models import CHAT_TEMPLATE
from smolconv.package import chat_template

GO_PROGRAM = Path(__file__).parent / "go" / "render.go"

# Conversations in HF's form: content parts of type text or image.
CONVERSATIONS = {
    "single turn": [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}],
    "system prompt": [
        {"role": "system", "content": [{"type": "text", "text": "Answer in one word."}]},
        {"role": "user", "content": [{"type": "text", "text": "Capital of Italy?"}]},
    ],
    "multi-turn": [
        {"role": "user", "content": [{"type": "text", "text": "Hi!"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello. How can I help?"}]},
        {"role": "user", "content": [{"type": "text", "text": "Name a colour.\nJust one."}]},
    ],
    "image turn": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this."}]}],
    "empty system": [
        {"role": "system", "content": [{"type": "text", "text": ""}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
    ],
    "two images, then a follow-up": [
        {"role": "system", "content": [{"type": "text", "text": "You compare pictures."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Differences?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The second is darker."}]},
        {"role": "user", "content": [{"type": "text", "text": "Which is bigger?"}]},
    ],
    "text that looks like markup": [
        {"role": "user", "content": [{"type": "text", "text": "Explain {{ .Content }} and <image> and [img-3"}]},
    ],
}


def ollama_messages(conversation: list[dict]) -> list[dict]:
    """What Ollama hands the template: content strings, images as base64 data, and an [img-N] marker per
    image in front of the message's text (server/prompt.go)."""
    messages, n = [], 0
    for message in conversation:
        texts = [p["text"] for p in message["content"] if p["type"] == "text"]
        images = [p for p in message["content"] if p["type"] == "image"]
        prefix = "".join(f"[img-{n + i}]" for i in range(len(images)))
        n += len(images)
        messages.append({"role": message["role"], "content": prefix + "".join(texts), "images": ["aGk="] * len(images)})
    return messages


def render_with_go(renderer: Path, template: str, messages: list[dict]) -> str:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    payload = json.dumps({"template": template, "system": system, "messages": messages})
    return subprocess.run([str(renderer)], input=payload, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_go_rendering_equals_the_hf_chat_template(go_renderer, name):
    conversation = CONVERSATIONS[name]
    [hf], _ = render_jinja_template(conversations=[conversation], chat_template=CHAT_TEMPLATE,
                                    add_generation_prompt=True)
    ollama = render_with_go(go_renderer, chat_template(), ollama_messages(conversation))
    assert re.sub(r"\[img-\d+\]", "<image>", ollama) == hf


def test_the_template_never_writes_image_tokens():
    assert "<image>" not in chat_template()


def test_the_hf_template_is_the_one_in_the_checkpoint(fixture_tiny):
    shipped = json.loads((fixture_tiny / "chat_template.json").read_text())["chat_template"]
    assert shipped == CHAT_TEMPLATE
