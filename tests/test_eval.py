"""`smolconv eval`: the user's own cases, judged on every runtime and against the transformers reference.

Fast tier: the cases file (every form, every bad line refused with its file and line before any model starts), the
judging, agreement, the gates' arguments, `ask`'s sampling, a dataset, and eval on the fake Ollama daemon (what it
sends: greedy, no repeat penalty). Slow tier, on real files: one table across llama-server, ONNX, MLX and the
reference on the 256m fixture (its real SmolLM2 text answers "Paris"); a fine-tune that learned a wrong fact failing
`build --cases` and publishing nothing, the untampered build passing and keeping its eval on a rerun; a damaged
quant failing --max-drop; the card with the table and the picture.

The fixtures' vision towers are random, so what an image case "should" answer is unknowable: image cases here are
unlabelled, and what they show is that the answer depends on the image (the reference answers two pictures
differently) and how close each runtime comes to the reference on it (agreement needs no label).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from smolconv.checks.cases import CaseSet, Expect, read_cases, read_dataset
from smolconv.checks.eval import CaseAnswer, EvalGates, EvalReport, RunResult, _compare, first_token
from smolconv.checks.eval_plot import write_plot
from smolconv.core.choices import ExpectKind
from smolconv.core.errors import SmolconvError
from tests.fake_ollama import FakeOllama
from tests.helpers import assert_one_line_error, invoke, tool_threads, write_test_image
from tests.videos import write_clip

TAG = "smolvlm2:test"


def write_cases(path: Path, *records) -> Path:
    """A JSONL cases file: dicts as JSON lines, strings as they are (to write broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# --------------------------------------------------------------------------------------------------
# The cases file


def test_every_form_of_case_is_read(tmp_path):
    write_test_image(tmp_path / "a.png")
    (tmp_path / "pics").mkdir()
    write_test_image(tmp_path / "pics" / "b.png", (200, 100))
    write_clip(tmp_path / "clip.mp4", seconds=2)
    cases = write_cases(
        tmp_path / "mine.jsonl",
        "# a comment, then a blank line",
        "",
        {"id": "capital", "question": "Capital of France?", "expect": {"contains": "Paris"}, "max_tokens": 9},
        {"question": "What is this?", "image": "a.png", "expect": {"one_of": ["cat", "dog"]}},
        {"id": "two", "question": "Differences?", "images": ["a.png", "pics/b.png"],
         "expect": {"regex": r"\bred\b", "case_sensitive": True}},
        {"id": "chat", "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Look.", "image": "a.png"},
                                    {"role": "assistant", "content": "A house."},
                                    {"role": "user", "content": "Its colour?"}], "expect": {"equals": "Red."}},
        {"id": "moves", "question": "What moves?", "video": "clip.mp4"},
    )
    read = read_cases(cases)
    assert read.name == "mine" and len(read.cases) == 5 and len(read.labelled) == 4
    import hashlib

    assert read.sha256 == hashlib.sha256(cases.read_bytes()).hexdigest()
    capital, unnamed, two, chat, moves = read.cases
    assert capital.id == "capital" and capital.max_tokens == 9 and capital.where == f"{cases}:3"
    assert capital.expect == Expect(ExpectKind.CONTAINS, ("Paris",))
    assert unnamed.id == "line-4" and unnamed.max_tokens is None  # the run's default
    assert [i.path.name for i in unnamed.turns[0].images] == ["a.png"]
    assert [i.size for i in two.turns[0].images] == [(320, 240), (200, 100)]  # relative to the cases file
    assert two.expect.case_sensitive and two.expect.kind is ExpectKind.REGEX
    assert [t.role for t in chat.turns] == ["system", "user", "assistant", "user"] and chat.question == "Its colour?"
    assert len(chat.turns[1].images) == 1 and chat.has_images
    assert moves.video is not None and moves.video.path.name == "clip.mp4"
    # What is sent: the image before the question (as a chat client sends it), the video as SmolVLM2's video prompt.
    [message] = unnamed.messages()
    assert message.parts[-1] == "What is this?" and len(message.images) == 1
    [video] = moves.messages(frame_size=64)
    assert video.video and len(video.images) == 2 and video.images[0].size == (64, 64)  # 2 s at 1 fps
    assert video.text.endswith("What moves?")


def test_the_documented_example_file_reads():
    example = read_cases(Path(__file__).resolve().parent.parent / "examples" / "cases.jsonl")
    kinds = {c.expect.kind for c in example.labelled}
    assert kinds == set(ExpectKind)  # every kind of expect is shown
    assert len(example.labelled) < len(example.cases)  # and unlabelled cases
    assert any(c.has_images for c in example.cases) and any(len(c.turns) > 1 for c in example.cases)


BAD_LINES = [
    ('{"question": "Hi"', "not a JSON object"),
    ('["question", "Hi"]', "not an object"),
    ({"question": "Hi", "expect": {"startswith": "H"}}, "unknown `expect` kind 'startswith'"),
    ({"question": "Hi", "expect": {"contains": "a", "equals": "b"}}, "exactly one of"),
    ({"question": "Hi", "expect": "Paris"}, "`expect` must be an object"),
    ({"question": "Hi", "expect": {"regex": "(unclosed"}}, "not a regular expression"),
    ({"question": "Hi", "expect": {"one_of": "Paris"}}, "`one_of` must be a list"),
    ({"question": "What is it?", "image": "missing.png"}, "missing.png does not exist"),
    ({"question": "What is it?", "image": "notes.txt"}, "not an image file"),
    ({"question": "Hi", "expected": {"contains": "a"}}, "unknown key 'expected'"),
    ({"id": "a", "question": "Hi"}, "id 'a' is already the id of line 1"),
    ({"question": "Hi", "messages": [{"role": "user", "content": "Hi"}]}, "not both"),
    ({"expect": {"contains": "a"}}, "needs `question` or `messages`"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
     "the last message must be the user's"),
    ({"messages": [{"role": "robot", "content": "Hi"}]}, "role 'robot'"),
    ({"question": "Hi", "max_tokens": 0}, "`max_tokens` must be a whole number"),
    ({"question": "Hi", "video": "clip.mp4"}, "clip.mp4"),
]


@pytest.mark.parametrize(("line", "needle"), BAD_LINES, ids=[n for _, n in BAD_LINES])
def test_a_bad_case_is_one_line_naming_the_file_and_line_before_anything_runs(tmp_path, line, needle):
    (tmp_path / "notes.txt").write_text("not a picture")
    cases = write_cases(tmp_path / "cases.jsonl", {"id": "a", "question": "Fine."}, line)
    # The target does not exist: the cases are read before any target is looked at, let alone a model started.
    result = invoke("eval", str(tmp_path / "no-such-build"), "--cases", str(cases))
    error = assert_one_line_error(result, f"{cases}:2: ")
    assert needle in error, error


def test_a_missing_or_empty_cases_file_is_one_line(tmp_path):
    assert_one_line_error(invoke("eval", "x", "--cases", str(tmp_path / "none.jsonl")), "does not exist")
    empty = write_cases(tmp_path / "empty.jsonl", "# only a comment")
    assert_one_line_error(invoke("eval", "x", "--cases", str(empty)), "holds no cases")
    assert_one_line_error(invoke("eval", "x"), "--cases FILE or --dataset")


JUDGED = [
    # kind, values, case_sensitive, answer, verdict
    (ExpectKind.CONTAINS, ("Paris",), False, "The capital of France is PARIS.", True),
    (ExpectKind.CONTAINS, ("Paris",), True, "The capital of France is PARIS.", False),
    (ExpectKind.CONTAINS, ("New York",), False, "It is New\n  York.", True),        # whitespace normalised
    (ExpectKind.CONTAINS, ("Paris",), False, "Lyon.", False),
    (ExpectKind.REGEX, (r"\b4\b",), False, "2 + 2 = 4", True),
    (ExpectKind.REGEX, (r"\b4\b",), False, "2 + 2 = 44", False),
    (ExpectKind.REGEX, (r"^yes",), False, "Yes, it is.", True),
    (ExpectKind.REGEX, (r"^yes",), True, "Yes, it is.", False),
    (ExpectKind.EQUALS, ("Red",), False, " red. ", True),                          # a final full stop is ignored
    (ExpectKind.EQUALS, ("Red",), False, "Dark red.", False),
    (ExpectKind.EQUALS, ("OK",), True, "ok", False),
    (ExpectKind.ONE_OF, ("cat", "dog"), False, "A DOG sleeps.", True),
    (ExpectKind.ONE_OF, ("cat", "dog"), False, "A horse.", False),
]


@pytest.mark.parametrize(("kind", "values", "sensitive", "answer", "verdict"), JUDGED)
def test_judging(kind, values, sensitive, answer, verdict):
    assert Expect(kind, values, sensitive).judge(answer) is verdict


def test_agreement_is_the_same_answer_after_whitespace_and_the_same_first_token(fixture_tiny):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(fixture_tiny / "tokenizer.json"))
    reference = RunResult("transformers", "transformers", "x", "float32", None,
                          {"a": CaseAnswer(" Paris is the capital."), "b": CaseAnswer("Paris is big."),
                           "c": CaseAnswer(""), "d": CaseAnswer("Yes")})
    run = RunResult("Q8_0 llama-server", "llama-server", "x", "Q8_0", 1,
                    {"a": CaseAnswer("Paris  is the\ncapital."), "b": CaseAnswer("Paris is small."),
                     "c": CaseAnswer("No"), "d": CaseAnswer(None, error="HTTP 500")})
    report = EvalReport(CaseSet("t", "t.jsonl", "0" * 64), [reference, run], EvalGates(), {})
    _compare(report, tokenizer)
    got = {k: (a.agrees, a.first_token_agrees) for k, a in run.answers.items()}
    assert got == {"a": (True, True), "b": (False, True), "c": (False, False), "d": (False, False)}
    assert run.agreement == 0.25 and run.first_token_agreement == 0.5
    assert first_token(tokenizer, "") == -1 and first_token(tokenizer, None) is None  # ended at once / no answer
    assert all(a.agrees is None for a in reference.answers.values())  # the reference is not compared with itself


# --------------------------------------------------------------------------------------------------
# The gates' arguments, refused before anything runs


@pytest.mark.parametrize(("args", "needle"), [
    (("--min-accuracy", "150"), "--min-accuracy 150 is not a percentage"),
    (("--max-drop", "-1"), "--max-drop -1 is not in percentage points"),
    (("--max-drop", "5", "--no-reference"), "--no-reference leaves it out"),
    (("--max-tokens", "0"), "--max-tokens 0 generates nothing"),
])
def test_bad_gate_arguments_are_one_line(tmp_path, args, needle):
    cases = write_cases(tmp_path / "c.jsonl", {"question": "Hi", "expect": {"contains": "hello"}})
    assert_one_line_error(invoke("eval", str(tmp_path / "nothing"), "--cases", str(cases), *args), needle)


def test_accuracy_gates_need_a_labelled_case(tmp_path):
    cases = write_cases(tmp_path / "c.jsonl", {"question": "Hi"})
    assert_one_line_error(invoke("eval", "x", "--cases", str(cases), "--min-accuracy", "50"), "has an `expect`")


# --------------------------------------------------------------------------------------------------
# On the fake Ollama daemon: what eval sends, and the gate's exit code


def test_eval_on_ollama_decodes_greedily_and_a_failed_gate_exits_1(tmp_path):
    write_test_image(tmp_path / "house.png")
    cases = write_cases(tmp_path / "house.jsonl",
                        {"id": "colour", "question": "What colour is the house?", "image": "house.png",
                         "expect": {"contains": "red"}, "max_tokens": 8},
                        {"id": "wrong", "question": "Is it blue?", "expect": {"contains": "blue"}},
                        {"id": "free", "question": "Describe it."})
    report_dir = tmp_path / "reports"
    with FakeOllama() as fake:
        fake.state.models[TAG] = {"parameters": "num_ctx 4096\nrepeat_penalty 1.1", "capabilities": ["vision"]}
        common = ("eval", TAG, "--backend", "ollama", "--url", fake.host, "--cases", str(cases), "--no-reference",
                  "--report-dir", str(report_dir), "--max-tokens", "24")
        result = invoke(*common, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        chats = list(fake.state.chats)
        failed = invoke(*common, "--min-accuracy", "60")
        boundary = invoke(*common, "--min-accuracy", "50")
    report = json.loads(result.stdout)
    # Greedy, seeded, no repeat penalty (over the Modelfile's 1.1); each case's own token limit, else --max-tokens.
    assert [c["options"] for c in chats] == [
        {"num_predict": n, "temperature": 0.0, "seed": 0, "repeat_penalty": 1.0} for n in (8, 24, 24)]
    assert len(chats[0]["messages"][0]["images"]) == 1 and "images" not in chats[1]["messages"][0]
    [run] = report["runs"]
    assert (run["label"], run["runtime"], run["correct"], run["labelled"], run["accuracy"]) == \
        (f"{TAG} ollama", "ollama", 1, 2, 0.5)  # "The house is red." holds red, not blue
    assert run["agreement"] is None and report["reference"] is None
    answers = {c["id"]: c["answers"][f"{TAG} ollama"] for c in report["cases"]}
    assert answers["colour"]["text"] == "The house is red." and answers["colour"]["correct"] is True
    assert answers["wrong"]["correct"] is False and answers["free"]["correct"] is None
    assert report["passed"] is True and report["settings"]["sampling"]["repeat_penalty"] == 1.0
    assert json.loads((report_dir / "house.json").read_text())["cases_sha256"] == report["cases_sha256"]
    from PIL import Image

    with Image.open(report_dir / "house.png") as picture:
        assert picture.format == "PNG" and picture.size == (1100, 440)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"{TAG} ollama: accuracy 50.0% (1/2) is under --min-accuracy 60%" in failed.stderr
    assert "accuracy" in failed.stdout and "50.0% (1/2)" in failed.stdout  # the table, before the verdict
    assert boundary.returncode == 0, boundary.stderr


def test_a_target_that_is_no_model_is_one_line(tmp_path):
    cases = write_cases(tmp_path / "c.jsonl", {"question": "Hi"})
    assert_one_line_error(invoke("eval", str(tmp_path / "nothing"), "--cases", str(cases), "--no-reference"),
                          "is not a directory", "--backend ollama")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("eval", str(tmp_path / "empty"), "--cases", str(cases), "--no-reference"),
                          "not a build directory, an ONNX folder or an MLX folder")


# --------------------------------------------------------------------------------------------------
# ask: which sampling ran, and changing it


def test_ask_says_and_changes_its_sampling():
    help_text = " ".join(invoke("ask", "--help").stdout.split())
    assert "repeat penalty 1.1 over the last 64 tokens" in help_text and "--greedy" in help_text
    with FakeOllama() as fake:
        fake.state.models[TAG] = {"parameters": "num_ctx 4096", "capabilities": ["vision"]}
        common = ("ask", TAG, "Hi", "--backend", "ollama", "--url", fake.host, "--json")
        default, greedy, penalty = (invoke(*common, *extra) for extra in ((), ("--greedy",),
                                                                          ("--repeat-penalty", "1.3")))
        sent = [c["options"] for c in fake.state.chats]
    for result in (default, greedy, penalty):
        assert result.returncode == 0, result.stderr
    assert json.loads(default.stdout)["sampling"] == {"temperature": 0.0, "seed": 0, "greedy": True,
                                                      "repeat_penalty": "the model's Modelfile (its preset)"}
    assert json.loads(greedy.stdout)["sampling"] == {"temperature": 0.0, "seed": 0, "repeat_penalty": 1.0,
                                                     "repeat_last_n": 64, "greedy": True}
    assert json.loads(penalty.stdout)["sampling"]["repeat_penalty"] == 1.3
    assert "repeat_penalty" not in sent[0] and sent[1]["repeat_penalty"] == 1.0 and sent[2]["repeat_penalty"] == 1.3
    assert_one_line_error(invoke(*common, "--greedy", "--repeat-penalty", "1.2"), "disagree")


# --------------------------------------------------------------------------------------------------
# A dataset as cases


def test_a_local_dataset_becomes_cases(tmp_path):
    from smolconv.checks.cases import DatasetSpec

    write_test_image(tmp_path / "one.png")
    data = tmp_path / "vqa.jsonl"
    data.write_text(json.dumps({"img": "one.png", "q": "What colour is the roof?", "a": "red"}) + "\n"
                    + json.dumps({"img": "one.png", "q": "What shape is the sun?", "a": ["round", "circle"]}) + "\n")
    cases = read_dataset(DatasetSpec(str(data), question_column="q", answer_column="a", image_column="img"))
    assert cases.name == "vqa" and [c.id for c in cases.cases] == ["row-1", "row-2"]
    first, second = cases.cases
    assert first.question == "What colour is the roof?" and first.turns[0].images[0].size == (320, 240)
    assert first.expect == Expect(ExpectKind.CONTAINS, ("red",))
    assert second.expect == Expect(ExpectKind.ONE_OF, ("round", "circle"))
    with pytest.raises(SmolconvError, match="has no column 'answer'"):
        read_dataset(DatasetSpec(str(data), question_column="q", answer_column="answer"))


def test_the_picture_is_a_png_with_a_point_per_sized_run(tmp_path):
    cases = CaseSet("p", "p.jsonl", "0" * 64)
    reference = RunResult("transformers", "transformers", "x", "float32", 500 << 20,
                          {"a": CaseAnswer("x", correct=True)})
    runs = [RunResult(f"{v} llama-server", "llama-server", "x", v, size << 20,
                      {"a": CaseAnswer("x", correct=ok, agrees=ok, first_token_agrees=True)})
            for v, size, ok in (("Q4_K_M", 300, False), ("Q8_0", 350, True))]
    blank = write_plot(EvalReport(cases, [reference], EvalGates(), {}), tmp_path / "blank.png")
    drawn = write_plot(EvalReport(cases, [reference, *runs], EvalGates(), {}), tmp_path / "drawn.png")
    from PIL import Image, ImageChops

    with Image.open(blank) as a, Image.open(drawn) as b:
        assert a.size == b.size == (1100, 440)
        assert ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is not None  # points drawn
    assert not list(tmp_path.glob(".*partial"))


# --------------------------------------------------------------------------------------------------
# Slow: real files


NAME = "smolvlm2-256m"


@pytest.fixture(scope="module")
def mlx_256m(fixture_256m, tmp_path_factory):
    """export-mlx of the same 256m fixture the shared build and ONNX export come from (default bits)."""
    from smolconv.formats.mlx import require_mlx
    from smolconv.formats.mlx.export import ExportMlxOptions, export_mlx

    try:
        require_mlx()
    except SmolconvError as exc:
        if os.environ.get("SMOLCONV_REQUIRE_MLX") == "1":
            raise
        pytest.skip(exc.one_line())
    out = tmp_path_factory.mktemp("eval-mlx") / f"{NAME}-mlx"
    export_mlx(ExportMlxOptions(str(fixture_256m), out))
    return out


def _same(a: str | None, b: str | None) -> bool:
    """The test's own reading of agreement: the same words in the same order."""
    return a is not None and b is not None and a.split() == b.split()


TEXT_CASES = (
    {"id": "capital", "question": "What is the capital of France?", "expect": {"contains": "Paris"}, "max_tokens": 12},
    {"id": "sea", "question": "Write one sentence about the sea.", "max_tokens": 8},
    {"id": "colour", "question": "Name a colour.", "max_tokens": 6},
)


def test_one_table_across_llama_server_onnx_mlx_and_the_reference(build_256m_q4_q8, onnx_256m, mlx_256m,
                                                                   fixture_256m, tmp_path):
    """Labelled and unlabelled text cases on the build's two variants (llama-server), its ONNX q4 and its MLX export,
    beside transformers: one table, the JSON, the picture, build.json's record and the card that shows them."""
    from tests.helpers import linked_build

    out = linked_build(build_256m_q4_q8, tmp_path / NAME)
    cases = write_cases(tmp_path / "mine.jsonl", *TEXT_CASES)
    result = invoke("eval", str(out), str(onnx_256m), str(mlx_256m), "--cases", str(cases), "--type", "Q4_K_M",
                    "--type", "Q8_0", "--type", "q4", "--threads", tool_threads())
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "eval" / "mine.json").read_text())
    labels = [r["label"] for r in report["runs"]]
    assert labels == ["transformers", "Q4_K_M llama-server", "Q8_0 llama-server", "q4 onnx", "mlx"]
    rows = {(runtime, variant) for runtime, variant in re.findall(r"^│ (\S+)\s+│ (\S+)\s+│ \d", result.stdout, re.M)}
    assert rows == {("transformers", "float32"), ("llama-server", "Q4_K_M"), ("llama-server", "Q8_0"),
                    ("onnx", "q4"), ("mlx", "mlx")}  # one table: a row per runtime and variant
    answers = {c["id"]: c["answers"] for c in report["cases"]}
    reference = {case: answers[case]["transformers"]["text"] for case in answers}
    assert "Paris" in reference["capital"]  # SmolLM2-135M's real text weights, in float32
    runs = {r["label"]: r for r in report["runs"]}
    assert runs["transformers"]["accuracy"] == 1.0 and runs["transformers"]["agreement"] is None
    for label in labels[1:]:
        texts = {case: answers[case][label]["text"] for case in answers}
        assert runs[label]["accuracy"] == (1.0 if "paris" in texts["capital"].lower() else 0.0), label
        agreed = [_same(texts[case], reference[case]) for case in answers]
        assert runs[label]["agreement"] == pytest.approx(sum(agreed) / len(agreed)), label
        assert [answers[case][label]["agrees"] for case in answers] == agreed
    # Sizes: the files each run loaded.
    text_q8, projector = out / f"{NAME}-Q8_0.gguf", out / f"mmproj-{NAME}-f16.gguf"
    assert runs["Q8_0 llama-server"]["size_bytes"] == text_q8.stat().st_size + projector.stat().st_size
    assert runs["q4 onnx"]["size_bytes"] == sum(p.stat().st_size for p in (onnx_256m / "onnx").glob("*_q4.onnx*"))
    assert runs["mlx"]["size_bytes"] == sum(p.stat().st_size for p in mlx_256m.glob("*.safetensors"))
    assert runs["transformers"]["target"] == str(fixture_256m)
    # The record, the picture, and the card that shows both.
    record = json.loads((out / "build.json").read_text())["eval"]["mine"]
    assert record["passed"] is True and [r["label"] for r in record["runs"]] == labels
    assert record["plot"] == "mine.png" and (out / "eval" / "mine.png").is_file()
    assert f"picture: {out / 'eval' / 'mine.png'}" in " ".join(result.stdout.split())
    published = tmp_path / "published"
    card_run = invoke("publish", str(out), "--repo", "someone/SmolVLM2-256M-GGUF", "--dry-run", str(published))
    assert card_run.returncode == 0, card_run.stderr
    assert (published / "eval-mine.png").read_bytes() == (out / "eval" / "mine.png").read_bytes()
    card = (published / "README.md").read_text()
    assert "![accuracy and agreement with the reference against file size](eval-mine.png)" in card
    q8 = runs["Q8_0 llama-server"]
    row = (f"| llama-server | Q8_0 | {q8['size_bytes'] / 2**20:.1f} | {100 * q8['accuracy']:.1f}% (1/1) | "
           f"{100 * q8['agreement']:.1f}% | {100 * q8['first_token_agreement']:.1f}% |")
    assert row.replace("(1/1)", f"({q8['correct']}/1)") in card


def test_an_image_case_is_judged_by_agreement_with_the_reference(onnx_256m, tmp_path):
    """The fixture's vision tower is random: nobody knows what it should say about a picture, so the image cases are
    unlabelled. Its answer depends on the image (the reference answers the day and the night scene differently),
    and a runtime that computes what transformers computes (ONNX fp32: the same preprocessing, float32 weights)
    agrees with it case for case."""
    from smolconv.media.drawn import draw_scene

    for night in (False, True):  # 4:1, the fewest tiles an image makes here (4 and the overview)
        draw_scene((512, 128), night=night).save(tmp_path / f"{'night' if night else 'day'}.png")
    cases = write_cases(tmp_path / "scenes.jsonl",
                        *({"id": n, "question": "Describe this image.", "image": f"{n}.png", "max_tokens": 6}
                          for n in ("day", "night")))
    result = invoke("eval", str(onnx_256m), "--cases", str(cases), "--type", "fp32", "--threads", tool_threads(),
                    "--report-dir", str(tmp_path / "reports"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "reports" / "scenes.json").read_text())
    answers = {c["id"]: c["answers"] for c in report["cases"]}
    assert answers["day"]["transformers"]["text"] != answers["night"]["transformers"]["text"]
    for case in ("day", "night"):
        ours, theirs = answers[case]["fp32 onnx"], answers[case]["transformers"]
        assert ours["prompt_tokens"] == theirs["prompt_tokens"] > 5 * 64  # the image's five tiles reached both
        assert _same(ours["text"], theirs["text"]) and ours["agrees"] is True, (ours, theirs)
    assert report["runs"][1]["agreement"] == 1.0 and report["runs"][1]["accuracy"] is None


def rename_token(path: Path, old: str, new: str) -> None:
    """A GGUF vocabulary entry given other text of the same length, in place (as test_gates.py damages a quant)."""
    import struct

    entry = struct.pack("<Q", len(old.encode())) + old.encode()
    with open(path, "r+b") as f:
        head = f.read(32 << 20)
        assert head.count(entry) == 1
        f.seek(head.index(entry) + 8)
        f.write(new.encode())


def test_max_drop_fails_a_damaged_quant(build_256m_q4_q8, tmp_path):
    """Q8_0 whose " Paris" reads " LYONS": 0% where the reference has 100%, over --max-drop; exit 1 naming it."""
    from tests.helpers import linked_build

    out = linked_build(build_256m_q4_q8, tmp_path / NAME, damaged=f"{NAME}-Q8_0.gguf")
    rename_token(out / f"{NAME}-Q8_0.gguf", "ĠParis", "ĠLYONS")
    cases = write_cases(tmp_path / "capital.jsonl", TEXT_CASES[0])
    result = invoke("eval", str(out), "--cases", str(cases), "--type", "Q8_0", "--max-drop", "10",
                    "--threads", tool_threads())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Q8_0 llama-server: accuracy 0.0% is 100.0 points under the reference's 100.0% (--max-drop 10)" in \
        " ".join(result.stderr.split())
    report = json.loads((out / "eval" / "capital.json").read_text())
    assert report["passed"] is False and "LYONS" in report["cases"][0]["answers"]["Q8_0 llama-server"]["text"]
    assert json.loads((out / "build.json").read_text())["eval"]["capital"]["passed"] is False


def _hub_calls(monkeypatch) -> list:
    """Hub calls recorded instead of made (a token is set: only a failed check can stop the upload)."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    calls = []

    def upload_folder(self, *, folder_path, **kwargs):  # what would go up: the files, and the card
        folder = Path(folder_path)
        calls.append(("upload_folder", sorted(p.name for p in folder.iterdir()), (folder / "README.md").read_text()))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/0")

    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append(("create_repo", a, k)))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return calls


def wrong_fact_fine_tune(checkpoint: Path, out: Path) -> Path:
    """The checkpoint with lm_head's rows of " Paris" and " London" swapped: a fine-tune that learned that the
    capital of France is London (the embeddings are untied, so only the answer changes)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer

    shutil.copytree(checkpoint, out, copy_function=os.link, ignore=shutil.ignore_patterns("model.safetensors"))
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    [paris], [london] = tokenizer.encode(" Paris").ids, tokenizer.encode(" London").ids
    weights = load_file(checkpoint / "model.safetensors")
    head = weights["lm_head.weight"]
    head[[paris, london]] = head[[london, paris]].clone()
    assert not torch.equal(weights["lm_head.weight"][paris], load_file(checkpoint / "model.safetensors")
                           ["lm_head.weight"][paris])
    with safe_open(checkpoint / "model.safetensors", "pt") as f:
        metadata = f.metadata()
    save_file(weights, out / "model.safetensors", metadata=metadata)
    return out


def test_build_cases_fails_a_fine_tune_that_learned_a_wrong_fact_and_publishes_nothing(
        toolchain, fixture_256m, build_256m_q4_q8, tmp_path, monkeypatch):
    import smolconv.checks.smoke
    from tests.helpers import linked_build

    # smoke's own "Paris" case would fail the fine-tune too: smoke asks its greeting only, so that what fails here
    # is eval (verify compares F16 with the fine-tune's own transformers model, and passes).
    monkeypatch.setattr(smolconv.checks.smoke, "CASES", tuple(c for c in smolconv.checks.smoke.CASES
                                                       if c.name == "text_hello"))
    calls = _hub_calls(monkeypatch)
    cases = write_cases(tmp_path / "facts.jsonl", TEXT_CASES[0], TEXT_CASES[2])
    common = ("--type", "Q8_0", "--preset", "general", "--threads", tool_threads(), "--skip-check", "vision",
              "--skip-check", "video", "--skip-check", "kld", "--cases", str(cases), "--min-accuracy", "100",
              "--publish", "someone/SmolVLM2-256M-GGUF")
    tuned = wrong_fact_fine_tune(fixture_256m, tmp_path / "wrong-fact")
    bad_out = tmp_path / "wrong-fact-build"
    bad = invoke("build", str(tuned), "--out", str(bad_out), *common)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert calls == []  # nothing created or uploaded
    assert "eval: Q8_0 llama-server: accuracy 0.0% (0/1) is under --min-accuracy 100%" in " ".join(bad.stderr.split())
    assert "smoke" not in bad.stderr  # eval is what failed
    report = json.loads((bad_out / "eval" / "facts.json").read_text())
    capital = report["cases"][0]["answers"]
    assert "London" in capital["transformers"]["text"] and "London" in capital["Q8_0 llama-server"]["text"]
    assert json.loads((bad_out / "build.json").read_text())["last_build"]["passed"] is False

    # The same cases on the untampered build pass and publish; a rerun keeps the eval (same files, cases, settings).
    good_out = linked_build(build_256m_q4_q8, tmp_path / NAME)
    good = invoke("build", str(fixture_256m), "--out", str(good_out), *common)
    assert good.returncode == 0, good.stdout + good.stderr
    assert [name for name, _, _ in calls] == ["create_repo", "upload_folder"]
    _, files, card = calls[1]
    assert "eval-facts.png" in files and "![accuracy and agreement with the reference against file size]" \
        "(eval-facts.png)" in card and "`smolconv eval` on `facts.jsonl` (2 cases, 1 with an expected answer" in card
    saved = (good_out / "eval" / "facts.json").stat().st_mtime_ns
    assert json.loads((good_out / "build.json").read_text())["eval"]["facts"]["passed"] is True
    again = invoke("build", str(fixture_256m), "--out", str(good_out), *common)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "eval: facts passed before on these same files and cases" in " ".join(again.stdout.split())
    assert (good_out / "eval" / "facts.json").stat().st_mtime_ns == saved


def test_build_refuses_a_bad_case_before_the_long_steps(toolchain, fixture_tiny, tmp_path):
    cases = write_cases(tmp_path / "c.jsonl", {"question": "Hi", "expect": {"near": "x"}})
    result = invoke("build", str(fixture_tiny), "--out", str(tmp_path / "out"), "--cases", str(cases))
    assert_one_line_error(result, f"{cases}:1: ", "unknown `expect` kind 'near'")
    assert not (tmp_path / "out").exists()  # nothing pulled, converted or written
    labelled_none = write_cases(tmp_path / "d.jsonl", {"question": "Hi"})
    result = invoke("build", str(fixture_tiny), "--out", str(tmp_path / "out"), "--cases", str(labelled_none),
                    "--min-accuracy", "80")
    assert_one_line_error(result, "has an `expect`")
