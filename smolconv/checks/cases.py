"""The user's own eval cases: read from a JSONL file (or a dataset), checked before any model starts, and judged.

One case a line (docs/eval.md, "The cases file"; examples/cases.jsonl):

    {"id": "capital", "question": "What is the capital of France?", "expect": {"contains": "Paris"}, "max_tokens": 16}
    {"id": "house", "question": "What colour is the house?", "image": "images/house.png"}
    {"id": "chat", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                {"role": "user", "content": "Name a colour."}]}

`question` (with `image`, `images` or `video`, paths relative to the cases file) or `messages` (each with `role`,
`content` and its own `image` / `images`); `expect` is one of `contains`, `regex`, `equals`, `one_of`, case-insensitive
unless `"case_sensitive": true`; a case without `expect` is unlabelled: it counts only for agreement with the
reference. Blank lines and lines starting with `#` are skipped. Anything wrong is one SmolconvError naming the file
and the line, raised while reading, so before any model starts.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from smolconv.core.choices import ExpectKind
from smolconv.core.errors import SmolconvError
from smolconv.media.images import ImageFile, load_image
from smolconv.media.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, VideoInfo, probe, prompt_parts, sample
from smolconv.runtime.chat import Message

DEFAULT_MAX_TOKENS = 128
ROLES = ("system", "user", "assistant")
CASE_KEYS = ("id", "question", "messages", "image", "images", "video", "expect", "max_tokens")
EXPECT_FLAGS = ("case_sensitive",)
FIX_FORMAT = "see docs/eval.md (the cases file) and examples/cases.jsonl"


# --------------------------------------------------------------------------------------------------
# Judging


def normalise(text: str) -> str:
    """Whitespace runs as one space, none at the ends: how answers are compared with each other."""
    return " ".join(text.split())


@dataclass(frozen=True)
class Expect:
    kind: ExpectKind
    values: tuple[str, ...]      # one value; one_of: several
    case_sensitive: bool = False

    def judge(self, answer: str) -> bool:
        fold = (lambda s: s) if self.case_sensitive else str.casefold
        text = normalise(answer)
        if self.kind is ExpectKind.REGEX:
            return re.search(self.values[0], text, 0 if self.case_sensitive else re.IGNORECASE) is not None
        if self.kind is ExpectKind.EQUALS:
            return fold(text.removesuffix(".")) == fold(normalise(self.values[0]).removesuffix("."))
        # contains, one_of: the (whitespace-normalised) text holds the value, or one of them
        return any(fold(normalise(value)) in fold(text) for value in self.values)

    def describe(self) -> str:
        shown = " | ".join(self.values) if self.kind is ExpectKind.ONE_OF else self.values[0]
        return f"{self.kind} {shown}" + (" (case-sensitive)" if self.case_sensitive else "")

    def to_dict(self) -> dict:
        value = list(self.values) if self.kind is ExpectKind.ONE_OF else self.values[0]
        return {str(self.kind): value} | ({"case_sensitive": True} if self.case_sensitive else {})


# --------------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class CaseTurn:
    role: str
    text: str
    images: tuple[ImageFile, ...] = ()


@dataclass(frozen=True)
class EvalCase:
    id: str
    turns: tuple[CaseTurn, ...]
    expect: Expect | None = None
    max_tokens: int | None = None      # None: the run's default
    video: VideoInfo | None = None     # goes with the last user turn, as SmolVLM2's video prompt
    where: str = ""                    # FILE:LINE (or the dataset's row), for messages about it

    @property
    def question(self) -> str:
        return next(t.text for t in reversed(self.turns) if t.role == "user")

    @property
    def has_images(self) -> bool:
        return any(t.images for t in self.turns)

    def messages(self, frame_size: int = 512, fps: float = DEFAULT_FPS,
                 max_frames: int = DEFAULT_MAX_FRAMES) -> list[Message]:
        """The conversation to send; a video is sampled here, its frames squared to `frame_size`."""
        messages = [Message.of(t.role, t.text, t.images) for t in self.turns]
        if self.video is not None:
            sampled = sample(self.video, fps, max_frames, frame_size)
            messages[-1] = Message("user", prompt_parts(sampled, self.turns[-1].text), video=True)
        return messages

    def describe(self) -> dict:
        """The case as the report shows it (images by file name)."""
        return {"id": self.id, "where": self.where, "question": self.question,
                "turns": len(self.turns), "images": [i.path.name for t in self.turns for i in t.images],
                "video": self.video.path.name if self.video else None,
                "expect": self.expect.to_dict() if self.expect else None, "max_tokens": self.max_tokens}


@dataclass
class CaseSet:
    name: str                          # the report's name: eval/NAME.json
    source: str                        # the cases file, or the dataset it came from
    sha256: str                        # of the file's bytes (a dataset: of the rows as read)
    cases: tuple[EvalCase, ...] = field(default_factory=tuple)

    @property
    def labelled(self) -> tuple[EvalCase, ...]:
        return tuple(c for c in self.cases if c.expect is not None)

    @property
    def has_video(self) -> bool:
        return any(c.video is not None for c in self.cases)


class _Line:
    """Where a problem is: `raise line.error(problem, fix)` gives the one-line error that names the file and line."""

    def __init__(self, path: Path, number: int):
        self.path, self.number = path, number

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"

    def error(self, problem: str, fix: str = FIX_FORMAT) -> SmolconvError:
        return SmolconvError(f"{self.where}: {problem}", fix)


def read_cases(path: Path | str) -> CaseSet:
    """The cases of a JSONL file, every image opened and every video probed; SmolconvError at the first bad line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SmolconvError(f"cases file {path} does not exist", "check the path given to --cases") from None
    except IsADirectoryError:
        raise SmolconvError(f"cases file {path} is a directory", "pass a JSONL file, one case a line") from None
    except OSError as exc:
        raise SmolconvError(f"cannot read cases file {path} ({exc.strerror})", "check its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SmolconvError(f"cases file {path} is not UTF-8 ({exc.reason} at byte {exc.start})",
                            "save it as UTF-8") from None
    cases, seen = [], {}
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        line = _Line(path, number)
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise line.error(f"not a JSON object ({exc.msg} at column {exc.colno})",
                             "write one JSON object a line (JSONL)") from None
        case = parse_case(record, line, path.parent)
        if case.id in seen:
            raise line.error(f"id {case.id!r} is already the id of line {seen[case.id]}", "give every case its own id")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise SmolconvError(f"cases file {path} holds no cases", "write one JSON object a line (examples/cases.jsonl)")
    return CaseSet(path.stem, str(path), hashlib.sha256(data).hexdigest(), tuple(cases))


def parse_case(record, line: _Line, base: Path) -> EvalCase:
    if not isinstance(record, dict):
        raise line.error(f"a JSON {type(record).__name__}, not an object", "write one JSON object a line")
    unknown = [k for k in record if k not in CASE_KEYS]
    if unknown:
        raise line.error(f"unknown key {unknown[0]!r}", f"use only {', '.join(CASE_KEYS)}")
    case_id = record.get("id", f"line-{line.number}")
    if not isinstance(case_id, str | int) or isinstance(case_id, bool) or not str(case_id).strip():
        raise line.error("`id` must be a non-empty string")
    has_question, has_messages = "question" in record, "messages" in record
    if has_question == has_messages:
        raise line.error("a case needs `question` or `messages` (one of them)" if not has_question else
                         "a case has `question` or `messages`, not both")
    video = None
    if has_question:
        question = record["question"]
        if not isinstance(question, str) or not question.strip():
            raise line.error("`question` must be a non-empty string")
        images = _images(record, line, base)
        if "video" in record:
            if images:
                raise line.error("a case has `image`/`images` or `video`, not both",
                                 "ask about the video and the images in separate cases")
            video = _video(record["video"], line, base)
        turns = (CaseTurn("user", question, images),)
    else:
        for key in ("image", "images", "video"):
            if key in record:
                raise line.error(f"`{key}` goes with `question`; with `messages`, give each message its own "
                                 "`image`/`images`" if key != "video" else "`video` goes with `question`, "
                                 "not `messages`")
        turns = _turns(record["messages"], line, base)
    max_tokens = record.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise line.error(f"`max_tokens` must be a whole number of 1 or more, not {max_tokens!r}")
    expect = parse_expect(record["expect"], line) if "expect" in record else None
    return EvalCase(str(case_id), turns, expect, max_tokens, video, line.where)


def parse_expect(value, line: _Line) -> Expect:
    kinds = ", ".join(str(k) for k in ExpectKind)
    if not isinstance(value, dict):
        raise line.error(f"`expect` must be an object with one of {kinds}, e.g. {{\"contains\": \"Paris\"}}")
    unknown = [k for k in value if k not in (*ExpectKind, *EXPECT_FLAGS)]
    if unknown:
        raise line.error(f"unknown `expect` kind {unknown[0]!r}", f"use one of {kinds}")
    given = [ExpectKind(k) for k in value if k in tuple(ExpectKind)]
    if len(given) != 1:
        raise line.error(f"`expect` needs exactly one of {kinds}" + (f", not {len(given)}" if given else ""))
    kind = given[0]
    case_sensitive = value.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise line.error("`case_sensitive` must be true or false")
    raw = value[kind]
    if kind is ExpectKind.ONE_OF:
        if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and v.strip() for v in raw):
            raise line.error("`one_of` must be a list of non-empty strings")
        values = tuple(raw)
    else:
        if not isinstance(raw, str) or not raw.strip():
            raise line.error(f"`{kind}` must be a non-empty string")
        values = (raw,)
    if kind is ExpectKind.REGEX:
        try:
            re.compile(raw)
        except re.error as exc:
            raise line.error(f"`regex` {raw!r} is not a regular expression ({exc})",
                             "fix the pattern (Python's re syntax)") from None
    return Expect(kind, values, case_sensitive)


def _paths(record: dict, line: _Line) -> list[str]:
    if "image" in record and "images" in record:
        raise line.error("give `image` or `images`, not both")
    if "image" in record:
        paths = [record["image"]]
    else:
        paths = record.get("images", [])
        if not isinstance(paths, list):
            raise line.error("`images` must be a list of paths")
    if not all(isinstance(p, str) and p for p in paths):
        raise line.error("an image must be a path (a string)")
    return paths


def _images(record: dict, line: _Line, base: Path) -> tuple[ImageFile, ...]:
    images = []
    for name in _paths(record, line):
        try:
            images.append(load_image(base / name))
        except SmolconvError as exc:
            raise line.error(exc.problem, exc.fix or "check the path: it is relative to the cases file") from None
    return tuple(images)


def _video(name, line: _Line, base: Path) -> VideoInfo:
    if not isinstance(name, str) or not name:
        raise line.error("`video` must be a path (a string)")
    try:
        return probe(base / name)
    except SmolconvError as exc:
        raise line.error(exc.problem, exc.fix or "check the path: it is relative to the cases file") from None


def _turns(messages, line: _Line, base: Path) -> tuple[CaseTurn, ...]:
    if not isinstance(messages, list) or not messages:
        raise line.error("`messages` must be a non-empty list of {\"role\", \"content\"} objects")
    turns = []
    for n, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise line.error(f"message {n} needs `role` and `content` (a string)")
        unknown = [k for k in message if k not in ("role", "content", "image", "images")]
        if unknown:
            raise line.error(f"message {n} has an unknown key {unknown[0]!r}", "use role, content, image or images")
        if message.get("role") not in ROLES:
            raise line.error(f"message {n} has role {message.get('role')!r}", f"use one of {', '.join(ROLES)}")
        turns.append(CaseTurn(message["role"], message["content"], _images(message, line, base)))
    if turns[-1].role != "user":
        raise line.error("the last message must be the user's: the answer to it is what is judged")
    return tuple(turns)


# --------------------------------------------------------------------------------------------------
# A dataset (`datasets.load_dataset`): a Hub id, or a local Parquet, CSV or JSON file


@dataclass(frozen=True)
class DatasetSpec:
    source: str                       # a Hub dataset id, or a local .parquet, .csv, .json or .jsonl file
    question_column: str = "question"
    answer_column: str | None = None  # its values become `expect` of this kind
    image_column: str | None = None
    answer_kind: ExpectKind = ExpectKind.CONTAINS
    split: str = "train"
    limit: int | None = None
    config: str | None = None

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.source).stem if Path(self.source).suffix
                      else self.source).strip("_") or "dataset"


LOCAL_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def read_dataset(spec: DatasetSpec) -> CaseSet:
    """A dataset's rows as cases: images decoded and checked, the rows hashed for the report's key."""
    try:
        import datasets
    except ImportError:
        raise SmolconvError("--dataset needs the Python package datasets",
                            "pip install 'smolconv[datasets]'") from None
    local = Path(spec.source)
    try:
        if local.suffix.lower() in LOCAL_BUILDERS:
            if not local.is_file():
                raise SmolconvError(f"dataset file {local} does not exist", "check the path given to --dataset")
            table = datasets.load_dataset(LOCAL_BUILDERS[local.suffix.lower()], data_files=str(local),
                                          split=spec.split)
        else:
            table = datasets.load_dataset(spec.source, spec.config, split=spec.split)
    except SmolconvError:
        raise
    except Exception as exc:  # datasets raises many kinds (not found, offline, bad split): one line for each
        raise SmolconvError(f"datasets could not load {spec.source} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})",
                            "check the id or path, --split, and that the Hub is reachable for a Hub id") from None
    columns = list(table.column_names)
    for option, column in (("--question-column", spec.question_column), ("--answer-column", spec.answer_column),
                           ("--image-column", spec.image_column)):
        if column is not None and column not in columns:
            raise SmolconvError(f"{spec.source} has no column {column!r} ({option})",
                                f"choose from {', '.join(columns)}")
    base = local.parent if local.suffix else Path(".")
    digest = hashlib.sha256(json.dumps([spec.source, spec.split, spec.question_column, spec.answer_column,
                                        spec.image_column, str(spec.answer_kind)]).encode())
    cases = []
    for n, row in enumerate(table):
        if spec.limit is not None and n >= spec.limit:
            break
        line = _Line(Path(spec.source), n + 1)
        line_name = f"row {n + 1}"
        question = row[spec.question_column]
        if not isinstance(question, str) or not question.strip():
            raise SmolconvError(f"{spec.source}, {line_name}: the question is empty", "fix the row or leave it out")
        images = ()
        if spec.image_column is not None:
            images = (_dataset_image(row[spec.image_column], line, base),)
            digest.update(images[0].data)
        expect = None
        if spec.answer_column is not None and row[spec.answer_column] not in (None, ""):
            answers = row[spec.answer_column]
            values = tuple(str(a) for a in answers) if isinstance(answers, list) else (str(answers),)
            kind = ExpectKind.ONE_OF if len(values) > 1 else spec.answer_kind
            expect = Expect(kind, values)
        digest.update(json.dumps([question, expect.to_dict() if expect else None]).encode())
        cases.append(EvalCase(f"row-{n + 1}", (CaseTurn("user", question, images),), expect,
                              where=f"{spec.source}, {line_name}"))
    if not cases:
        raise SmolconvError(f"{spec.source} ({spec.split}) has no rows", "check --split")
    return CaseSet(spec.name, spec.source, digest.hexdigest(), tuple(cases))


def _dataset_image(value, line: _Line, base: Path) -> ImageFile:
    """A dataset's image cell: a decoded PIL image, datasets' {"bytes", "path"}, or a path relative to the file."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return _image_bytes(value["bytes"], value.get("path") or f"row-{line.number}.png", line)
        value = value.get("path")
    if isinstance(value, str):
        try:
            return load_image(base / value)
        except SmolconvError as exc:
            raise SmolconvError(f"{line.path}, row {line.number}: {exc.problem}", exc.fix) from None
    if hasattr(value, "save"):  # a PIL image (datasets' Image feature)
        out = io.BytesIO()
        value.convert("RGB").save(out, format="PNG")
        return _image_bytes(out.getvalue(), f"row-{line.number}.png", line)
    raise SmolconvError(f"{line.path}, row {line.number}: the image cell is {type(value).__name__}",
                        "use an image column, or a column of paths relative to the data file")


def _image_bytes(data: bytes, name: str, line: _Line) -> ImageFile:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt, size = image.format, image.size
    except Exception as exc:
        raise SmolconvError(f"{line.path}, row {line.number}: the image does not decode ({exc})",
                            "fix or drop the row") from None
    if fmt not in ("JPEG", "PNG", "WEBP"):
        out = io.BytesIO()
        with Image.open(io.BytesIO(data)) as image:
            image.convert("RGB").save(out, format="PNG")
        data, fmt = out.getvalue(), "PNG"
    return ImageFile(Path(Path(name).name), data, fmt, size)
