"""A recipe: the models `smolconv batch` builds, one `[[model]]` table each, and `[defaults]` they all inherit.

    [defaults]
    types = ["Q4_K_M", "Q8_0"]
    formats = ["gguf"]

    [[model]]
    name = "receipts"
    source = "2.2b"
    adapter = "you/smolvlm2-receipts-lora"
    publish = "you/SmolVLM2-2.2B-receipts-GGUF"

Everything is checked when the file is read, before anything runs: an unknown key, a duplicate name, a value of the
wrong kind, a path that does not exist (relative paths are read from the recipe's folder) is one line naming the
file, the entry, the problem and the fix (exit 2).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.choices import AdapterFormat, OutputFormat
from smolconv.core.errors import SmolconvError
from smolconv.core.models import ALIASES
from smolconv.core.templates import load_presets, templates_dir
from smolconv.formats.gguf.quantize import DEFAULT_TYPES

# The keys of a [[model]] table, in the order the docs list them; [defaults] takes all of them but `name`.
ENTRY_KEYS = ("name", "source", "revision", "adapter", "adapter_revision", "adapter_format", "types", "presets",
              "formats", "cases", "publish", "private")
TOP_KEYS = ("defaults", "model")
# A name is a folder (DIR/<name>/), a job label and a matrix value: letters, digits, '.', '_' and '-'.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# What `publish` can upload: a GGUF build, or an MLX export (smolconv has no ONNX publisher).
PUBLISHABLE = (OutputFormat.GGUF, OutputFormat.MLX)


@dataclass(frozen=True)
class Place:
    """Where a source or an adapter comes from: a Hub repo (alias resolved) or a local directory."""

    text: str                  # as the recipe wrote it
    repo_id: str | None = None
    path: Path | None = None   # absolute

    @property
    def argument(self) -> str:
        """What pull takes: the directory, or the alias / Hub id as written."""
        return str(self.path) if self.path is not None else self.text


@dataclass(frozen=True)
class Entry:
    name: str
    source: Place
    revision: str | None = None
    adapter: Place | None = None
    adapter_revision: str | None = None
    adapter_format: AdapterFormat = AdapterFormat.MERGE
    types: tuple[str, ...] = DEFAULT_TYPES
    presets: tuple[str, ...] = ()
    formats: tuple[OutputFormat, ...] = (OutputFormat.GGUF,)
    cases: Path | None = None
    publish: str | None = None
    private: bool = False

    @property
    def publish_format(self) -> OutputFormat | None:
        """The format `publish` uploads (None: the entry publishes nothing)."""
        if not self.publish:
            return None
        return next(f for f in self.formats if f in PUBLISHABLE)

    def to_toml(self) -> str:
        """This entry alone, defaults applied, as a recipe of its own (what a Hugging Face Job runs). Only for
        entries without local paths (a job cannot read them)."""
        values = {"name": self.name, "source": self.source.text, "revision": self.revision,
                  "adapter": self.adapter.text if self.adapter else None, "adapter_revision": self.adapter_revision,
                  "adapter_format": str(self.adapter_format), "types": list(self.types),
                  "presets": list(self.presets), "formats": [str(f) for f in self.formats],
                  "publish": self.publish, "private": self.private}
        lines = ["[[model]]"]
        for key, value in values.items():
            if value is None or value == []:
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Recipe:
    path: Path
    entries: tuple[Entry, ...]

    def select(self, only: tuple[str, ...] | list[str] | None) -> list[Entry]:
        """The entries `--only` names (all without it); an unknown name is a one-line error."""
        if not only:
            return list(self.entries)
        names = [e.name for e in self.entries]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise SmolconvError(f"{self.path}: no entry named {', '.join(unknown)}",
                                f"use one of {', '.join(names)}")
        return [e for e in self.entries if e.name in only]


def load_recipe(path: Path) -> Recipe:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SmolconvError(f"recipe {path} does not exist", "pass the path of a recipe file (TOML)") from None
    except (IsADirectoryError, NotADirectoryError):
        raise SmolconvError(f"recipe {path} is not a file", "pass the path of a recipe file (TOML)") from None
    except UnicodeDecodeError:
        raise SmolconvError(f"recipe {path} is not UTF-8 text", "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise SmolconvError(f"{path} is not valid TOML ({exc})", "fix the syntax at that line") from None
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise SmolconvError(f"{path}: unknown table or key {unknown[0]!r}",
                            "a recipe has a [defaults] table and [[model]] tables only")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SmolconvError(f"{path}: defaults must be a table", "write it as [defaults]")
    tables = data.get("model")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise SmolconvError(f"{path} has no [[model]] entries", "add one [[model]] table per model to build")
    _check_keys(path, "[defaults]", defaults, exclude=("name",))
    base = path.resolve().parent
    entries: list[Entry] = []
    for n, table in enumerate(tables, 1):
        label = f"entry {table['name']!r}" if isinstance(table.get("name"), str) else f"[[model]] number {n}"
        _check_keys(path, label, table)
        entry = _entry(path, label, base, {**defaults, **table})
        if any(e.name == entry.name for e in entries):
            raise SmolconvError(f"{path}: two entries are named {entry.name!r}",
                                "give each [[model]] a name of its own (it names the entry's folder)")
        entries.append(entry)
    return Recipe(path, tuple(entries))


def _check_keys(path: Path, label: str, table: dict, exclude: tuple[str, ...] = ()) -> None:
    allowed = [k for k in ENTRY_KEYS if k not in exclude]
    for key in table:
        if key not in allowed:
            raise SmolconvError(f"{path}, {label}: unknown key {key!r}", f"use one of {', '.join(allowed)}")


def _entry(path: Path, label: str, base: Path, values: dict) -> Entry:
    def fail(problem: str, fix: str) -> SmolconvError:
        return SmolconvError(f"{path}, {label}: {problem}", fix)

    def text(key: str, required: bool = False) -> str | None:
        value = values.get(key)
        if value is None:
            if required:
                raise fail(f"no {key}", f"add {key} = \"…\" to the entry (or to [defaults])")
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{key} must be a non-empty string", f"write {key} = \"…\"")
        return value

    def strings(key: str) -> tuple[str, ...] | None:
        value = values.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise fail(f"{key} must be a non-empty list of strings", f"write {key} = [\"…\", …]")
        if len(set(value)) != len(value):
            raise fail(f"{key} lists a value twice", f"list each of {key} once")
        return tuple(value)

    name = text("name", required=True)
    if not NAME.match(name):
        raise fail(f"name {name!r} is not a folder name",
                   "use letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit")
    source = _place(fail, base, "source", text("source", required=True), aliases=True)
    adapter_text = text("adapter")
    adapter = _place(fail, base, "adapter", adapter_text, aliases=False) if adapter_text else None
    adapter_format = values.get("adapter_format", AdapterFormat.MERGE)
    if adapter_format not in tuple(AdapterFormat):
        raise fail(f"adapter_format {adapter_format!r} is not one smolconv knows",
                   f"use one of {', '.join(AdapterFormat)}")
    formats = strings("formats") or (OutputFormat.GGUF,)
    for value in formats:
        if value not in tuple(OutputFormat):
            raise fail(f"format {value!r} is not one smolconv builds", f"use {', '.join(OutputFormat)}")
    formats = tuple(OutputFormat(f) for f in formats)
    presets = strings("presets") or ()
    known = load_presets(templates_dir())
    for preset in presets:
        if preset != "all" and preset not in known:
            raise fail(f"preset {preset!r} does not exist", f"use all, or some of {', '.join(known)}")
    cases = None
    if (cases_text := text("cases")) is not None:
        cases = (base / Path(cases_text).expanduser()).resolve()
        if not cases.is_file():
            raise fail(f"cases file {cases_text} does not exist",
                       "fix the path (a relative path is read from the recipe's folder)")
        if OutputFormat.GGUF not in formats:
            raise fail("cases are evaluated on the entry's GGUF build, and it builds none",
                       "add \"gguf\" to its formats, or drop cases")
    publish = text("publish")
    if publish is not None:
        _check_publish(fail, publish, formats)
    private = values.get("private", False)
    if not isinstance(private, bool):
        raise fail("private must be true or false", "write private = true")
    if private and not publish:
        raise fail("private is set but the entry publishes nothing", "add publish = \"you/NAME\", or drop private")
    return Entry(name=name, source=source, revision=text("revision"), adapter=adapter,
                 adapter_revision=text("adapter_revision"), adapter_format=AdapterFormat(adapter_format),
                 types=strings("types") or DEFAULT_TYPES, presets=presets, formats=formats, cases=cases,
                 publish=publish, private=private)


def _place(fail, base: Path, key: str, value: str, *, aliases: bool) -> Place:
    """A directory that exists (relative to the recipe's folder), an alias, or a Hub id; else the path is missing."""
    local = (base / Path(value).expanduser())
    if local.is_dir():
        return Place(value, path=local.resolve())
    if local.exists():
        raise fail(f"{key} {value} is a file, not a directory",
                   f"pass the directory that holds the {'checkpoint' if key == 'source' else 'adapter'}")
    if aliases and value.lower() in ALIASES:
        return Place(value, repo_id=ALIASES[value.lower()])
    looks_local = value.startswith((".", "/", "~")) or value.count("/") != 1 or "\\" in value
    if looks_local:
        hint = f"an alias ({', '.join(ALIASES)}) or " if aliases else ""
        raise fail(f"{key} {value} does not exist",
                   f"fix the path (a relative path is read from the recipe's folder), or name {hint}a Hub id")
    return Place(value, repo_id=value)


def _check_publish(fail, repo_id: str, formats: tuple[OutputFormat, ...]) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        valid = repo_id.count("/") == 1
    except HFValidationError:
        valid = False
    if not valid:
        raise fail(f"publish {repo_id!r} is not a Hub repo id", "write publish = \"you/NAME\"")
    if OutputFormat.ONNX in formats:
        raise fail("publish uploads a GGUF build or an MLX export, and this entry also builds onnx",
                   "put onnx in an entry of its own without publish (smolconv does not publish ONNX)")
    if OutputFormat.GGUF in formats and OutputFormat.MLX in formats:
        raise fail("publish names one repo, and this entry builds both gguf and mlx",
                   "split it into a gguf entry and an mlx entry, each with its own publish repo")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
