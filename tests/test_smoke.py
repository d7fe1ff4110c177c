"""smoke: the judging rules, image checks, and the Ollama client against the fake daemon (tests only)."""

from __future__ import annotations

import base64

import pytest

from smolconv.checks.backends import BackendRequest
from smolconv.checks.smoke import (
    CASES,
    SmokeOptions,
    SmokeRun,
    image_tokens,
    judge,
    run_suite,
    smoke,
    smoke_runs,
)
from smolconv.core.choices import BackendKind
from smolconv.core.errors import SmolconvError
from smolconv.media.drawn import write_smoke_images
from smolconv.media.images import load_image
from smolconv.runtime.chat import Answer, Message, OllamaBackend
from tests.fake_ollama import FakeOllama
from tests.helpers import PROJECTOR_256M

CASE = {c.name: c for c in CASES}


def answer(text="Paris.", finish="stop", prompt_tokens=20, completion_tokens=3) -> Answer:
    return Answer(text=text, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  wall_s=0.1, ttft_s=0.05, prompt_tps=100.0, decode_tps=50.0)


def test_an_answer_that_stops_without_template_text_passes():
    result = judge(CASE["text_fact"], answer(" The capital of France is Paris."), min_prompt_tokens=0,
                   max_tokens=64, strict=True, random_parts=frozenset())
    assert result.passed and result.expectation is True


@pytest.mark.parametrize("leak", ["<end_of_utterance>", "<|im_start|>", "<image>", "<row_1_col_1>"])
def test_template_text_in_an_answer_fails(leak):
    result = judge(CASE["text_hello"], answer(f"Hi!{leak}"), min_prompt_tokens=0, max_tokens=128, strict=False,
                   random_parts=frozenset())
    assert not result.passed and "template text" in result.reason


def test_running_to_the_limit_fails_except_for_images_on_a_random_vision_tower():
    limit = answer("la la la", finish="length", completion_tokens=160)
    vision = frozenset({"vision"})
    text = judge(CASE["text_hello"], limit, min_prompt_tokens=0, max_tokens=128, strict=False, random_parts=vision)
    assert not text.passed and "did not stop" in text.reason
    real = judge(CASE["image_png"], limit, min_prompt_tokens=0, max_tokens=160, strict=False, random_parts=frozenset())
    assert not real.passed
    fixture = judge(CASE["image_png"], limit, min_prompt_tokens=0, max_tokens=160, strict=False, random_parts=vision)
    assert fixture.passed and "not judged" in fixture.notes[0]


def test_random_text_weights_make_every_answer_noise_but_images_must_still_arrive():
    everything = frozenset({"vision", "text"})
    noise = answer("la <row_1_col_1> la", finish="length", completion_tokens=128)
    text = judge(CASE["text_fact"], noise, min_prompt_tokens=0, max_tokens=128, strict=True, random_parts=everything)
    assert text.passed and any("random" in note for note in text.notes)
    lost = judge(CASE["image_png"], answer("la", finish="length", prompt_tokens=12), min_prompt_tokens=320,
                 max_tokens=160, strict=False, random_parts=everything)
    assert not lost.passed and "did not reach the model" in lost.reason
    # with real text weights (random vision only), template text in an image answer still fails
    leak = judge(CASE["image_png"], answer("A house<end_of_utterance>"), min_prompt_tokens=0, max_tokens=160,
                 strict=False, random_parts=frozenset({"vision"}))
    assert not leak.passed and "template text" in leak.reason


def test_an_image_that_never_reached_the_model_fails():
    result = judge(CASE["image_png"], answer("A house.", prompt_tokens=12), min_prompt_tokens=320, max_tokens=160,
                   strict=False, random_parts=frozenset())
    assert not result.passed and "did not reach the model" in result.reason


def test_expected_words_gate_only_when_strict():
    wrong = answer(" The capital of France is Lyon.")
    assert judge(CASE["text_fact"], wrong, min_prompt_tokens=0, max_tokens=64, strict=False,
                 random_parts=frozenset()).passed
    assert not judge(CASE["text_fact"], wrong, min_prompt_tokens=0, max_tokens=64, strict=True,
                     random_parts=frozenset()).passed


def test_strict_judging_lets_only_an_empty_reply_on_a_fixture_through():
    empty, wrong = answer(""), answer(" The capital of France is Lyon.")
    fixture = frozenset({"vision"})  # the 256m fixture: real text weights, random vision tower
    on_fixture = judge(CASE["text_fact"], empty, min_prompt_tokens=0, max_tokens=64, strict=True,
                       random_parts=fixture)
    assert on_fixture.passed and any("not judged: an empty reply on a smolconv fixture" in n for n in on_fixture.notes)
    assert not judge(CASE["text_fact"], wrong, min_prompt_tokens=0, max_tokens=64, strict=True,
                     random_parts=fixture).passed
    real = judge(CASE["text_fact"], empty, min_prompt_tokens=0, max_tokens=64, strict=True, random_parts=frozenset())
    assert not real.passed and "does not match" in real.reason


def test_image_tokens_follow_the_tiling():
    # 960x240 -> 2048x512 -> 4x1 tiles + overview; 4000x3000 -> 2048x1536 -> 4x3 + 1; 1x1 -> 2048x2048 -> 16 + 1
    assert image_tokens(PROJECTOR_256M, (960, 240)) == 5 * 64
    assert image_tokens(PROJECTOR_256M, (4000, 3000)) == 13 * 64
    assert image_tokens(PROJECTOR_256M, (1, 1)) == 17 * 64
    assert image_tokens(None, (640, 480)) == 64


def test_smoke_images_are_valid_and_the_corrupt_one_is_refused(tmp_path):
    images = write_smoke_images(tmp_path)
    assert load_image(images["scene_webp"]).format == "WEBP"
    assert load_image(images["large_jpeg"]).size == (4000, 3000)
    assert load_image(images["one_pixel_png"]).size == (1, 1)
    with pytest.raises(SmolconvError, match="corrupt or truncated"):
        load_image(images["corrupt_jpeg"])
    gif = tmp_path / "x.gif"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(gif)
    with pytest.raises(SmolconvError, match="GIF"):
        load_image(gif)
    with pytest.raises(SmolconvError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_webp_goes_to_llama_server_as_png(tmp_path):
    from smolconv.runtime.chat import LlamaServerBackend

    images = write_smoke_images(tmp_path)
    webp, jpeg = load_image(images["scene_webp"]), load_image(images["scene_jpeg"])
    parts = LlamaServerBackend.content(Message.of("user", "Describe.", [webp, jpeg]))
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert parts[2] == {"type": "text", "text": "Describe."}


def test_ollama_client_sends_base64_images_and_reads_the_stream(tmp_path):
    images = write_smoke_images(tmp_path)
    with FakeOllama() as fake:
        fake.state.models["smolvlm2:test"] = {"parameters": "num_ctx 4096\nstop \"<end_of_utterance>\"",
                                              "capabilities": ["completion", "vision"]}
        backend = OllamaBackend("smolvlm2:test", fake.host)
        info = backend.info()
        assert info["ollama"] == "0.33.0" and info["n_ctx"] == 4096 and info["vision"] is True
        png = load_image(images["scene_png"])
        got = backend.chat([Message.of("user", "Describe this image.", [png])], max_tokens=32)
    request = fake.state.chats[0]
    assert request["stream"] is True and request["options"]["num_predict"] == 32
    assert request["options"]["temperature"] == 0
    assert base64.b64decode(request["messages"][0]["images"][0]) == png.data
    assert got.text == "The house is red." and got.finish_reason == "stop"
    assert got.prompt_tokens == 3 + 400 and got.completion_tokens == 3
    assert got.decode_tps == pytest.approx(3 / 0.25) and got.prompt_tps == pytest.approx(403 / 0.5)
    assert got.ttft_s is not None and got.ttft_s <= got.wall_s
    assert got.stats["done_reason"] == "stop" and got.stats["eval_duration"] == 250_000_000


def test_suite_on_the_fake_ollama_refuses_the_corrupt_image_before_sending(tmp_path):
    with FakeOllama() as fake:
        fake.state.models["smolvlm2:test"] = {"parameters": "num_ctx 4096", "capabilities": ["vision"]}
        wanted = tuple(c for c in CASES if c.name in ("image_jpeg", "follow_up", "corrupt_image"))
        results = run_suite(OllamaBackend("smolvlm2:test", fake.host), write_smoke_images(tmp_path), n_ctx=4096,
                            projector=PROJECTOR_256M, cases=wanted)
    by_name = {r.name: r for r in results}
    assert all(r.passed for r in results), [(r.name, r.reason) for r in results]
    assert by_name["corrupt_image"].reason == "refused before sending"
    assert len(fake.state.chats) == 2  # the corrupt case sent nothing
    follow_up = fake.state.chats[1]["messages"]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user"]
    assert follow_up[1]["content"] == "The house is red." and len(follow_up[0]["images"]) == 1


def test_a_stream_that_runs_to_the_limit_fails_and_the_report_is_written(tmp_path):
    with FakeOllama() as fake:
        fake.state.models["smolvlm2:test"] = {"parameters": "num_ctx 2048", "capabilities": ["vision"]}
        fake.state.done_reason = "length"
        reports = smoke(SmokeOptions("smolvlm2:test", backend="ollama", url=fake.host, cases=("text_hello",),
                                     report_dir=tmp_path))
    assert not reports[0].passed and "did not stop" in reports[0].results[0].reason
    import json

    saved = json.loads(reports[0].path.read_text())
    assert saved["passed"] is False and saved["backend_info"]["ollama"] == "0.33.0"
    assert saved["cases"][0]["answer"]["stats"]["done_reason"] == "length"


def test_answers_that_are_noise_are_asked_for_few_tokens_and_the_rest_for_their_limit(tmp_path):
    """On a fixture, an image answer comes out of the random vision tower (every answer, where the text is random
    too): it is asked for NOISE_MAX_TOKENS; a real model, and the fixture's real text, for each case's own limit."""
    from smolconv.checks.smoke import NOISE_MAX_TOKENS

    wanted = tuple(c for c in CASES if c.name in ("text_fact", "image_jpeg"))
    images = write_smoke_images(tmp_path)
    asked = {}
    for parts in (frozenset(), frozenset({"vision"}), frozenset({"vision", "text"})):
        with FakeOllama() as fake:
            fake.state.models["smolvlm2:test"] = {"parameters": "num_ctx 4096", "capabilities": ["vision"]}
            results = run_suite(OllamaBackend("smolvlm2:test", fake.host), images, n_ctx=4096,
                                projector=PROJECTOR_256M, cases=wanted, random_parts=parts)
        assert all(r.passed for r in results), [(r.name, r.reason) for r in results]
        asked[tuple(sorted(parts))] = [chat["options"]["num_predict"] for chat in fake.state.chats]
    assert CASE["text_fact"].max_tokens == 64 and CASE["image_jpeg"].max_tokens == 160 and NOISE_MAX_TOKENS == 16
    assert asked == {(): [64, 160], ("vision",): [64, 16], ("text", "vision"): [16, 16]}


def test_unknown_case_and_backend_are_one_line_errors():
    with pytest.raises(SmolconvError, match="no smoke case 'nope'"):
        smoke(SmokeOptions("x", cases=("nope",)))
    with pytest.raises(SmolconvError, match="unknown backend"):
        smoke(SmokeOptions("x", backend="vllm"))


def test_cases_of_the_shared_projector_run_once_and_the_other_variants_say_where(tmp_path):
    wanted = ("text_hello", "image_jpeg", "image_png", "blank_image", "corrupt_image", "long_prompt")
    cases = tuple(c for c in CASES if c.name in wanted)
    images = write_smoke_images(tmp_path / "images")
    with FakeOllama() as fake:
        for tag, n_ctx in (("m:q4", 4096), ("m:q8", 4096), ("other:q4", 2048)):
            fake.state.models[tag] = {"parameters": f"num_ctx {n_ctx}", "capabilities": ["vision"]}
        runs = [SmokeRun(tag, BackendRequest(BackendKind.OLLAMA, tag, url=fake.host), PROJECTOR_256M, sha)
                for tag, sha in (("m:q4", "a" * 64), ("m:q8", "a" * 64), ("other:q4", "b" * 64))]
        reports = smoke_runs(runs, SmokeOptions("m", backend="ollama"), cases, images, random_parts=frozenset(),
                             report_dir=tmp_path)
    first, second, other = ({r.name: r for r in report.results} for report in reports)
    assert all(report.passed for report in reports)
    # text, one image and the refused file on every variant; PNG and the blank image once per projector file,
    # the long prompt once per context size (three requests: two measure the filler's tokens, then the prompt)
    assert [c["model"] for c in fake.state.chats] == ["m:q4"] * 7 + ["m:q8"] * 2 + ["other:q4"] * 7
    assert not any(r.covered_by for r in first.values()) and not any(r.covered_by for r in other.values())
    for name in ("image_png", "blank_image"):
        assert second[name].covered_by == "m:q4" and second[name].answer is None
        assert second[name].reason.startswith("covered by m:q4 (same projector sha256 aaaaaaaaaaaa)")
        assert second[name].passed == first[name].passed
    assert second["long_prompt"].covered_by == "m:q4" and second["long_prompt"].answer is None
    assert second["long_prompt"].reason.startswith("covered by m:q4 (same context, 4096 tokens)")
    assert other["long_prompt"].answer is not None  # other:q4 has its own projector and context
    assert second["image_jpeg"].answer is not None and second["text_hello"].covered_by is None
    # the report on disk and the build.json summary say it per variant, in the suite's order
    import json

    saved = json.loads(reports[1].path.read_text())
    assert [c["name"] for c in saved["cases"]] == list(wanted)
    assert {c["name"]: c["covered_by"] for c in saved["cases"] if c["covered_by"]} == \
        {"image_png": "m:q4", "blank_image": "m:q4", "long_prompt": "m:q4"}
    assert reports[1].summary()["covered_by"] == {"image_png": "m:q4", "blank_image": "m:q4", "long_prompt": "m:q4"}
