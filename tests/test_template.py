"""The TEMPLATE, rendered by Go's own text/template with Ollama's data, equals SmolVLM2's HF chat template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from smolconv.core.models import CHAT_TEMPLATE
from smolconv.core.templates import chat_template
from tests.helpers import CONVERSATIONS, ollama_messages, render_with_go

GO_PROGRAM = Path(__file__).parent / "go" / "render.go"


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
