"""A Modelfile reader for the tests, following Ollama's parser (parser/parser.go) state by state.

Written from reading that parser: commands are a name, whitespace, and a value that runs to a line end at
which the text so far, trimmed, is either bare or closed by the quote it opened with (" or \"\"\"). There are
no escapes. Runes that Go's strconv.IsPrint rejects are dropped, except the whitespace the value keeps.
"""

from __future__ import annotations

COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires"}


class ModelfileError(ValueError):
    pass


def _unquote(text: str) -> tuple[str, bool]:
    if text.startswith('"""'):
        return (text[3:-3], True) if len(text) >= 6 and text.endswith('"""') else ("", False)
    if text.startswith('"'):
        return (text[1:-1], True) if len(text) >= 2 and text.endswith('"') else ("", False)
    return text, True


def _go_trim(text: str) -> str:
    return text.strip(" \t\n\r\v\f\x85\xa0")


def parse(text: str) -> list[tuple[str, str]]:
    """[(command, value)]: `from` is reported as `model`, a parameter by its own name."""
    commands: list[tuple[str, str]] = []
    state, buf, name = "nil", [], ""
    for ch in text:
        if state == "nil":
            if ch == "#":
                state = "comment"
            elif ch in " \t\r\n":
                pass
            else:
                state, buf = "name", [ch]
        elif state == "comment":
            if ch in "\r\n":
                state = "nil"
        elif state in ("name", "parameter"):
            if ch in " \t":
                word = "".join(buf)
                if state == "name":
                    if word.lower() not in COMMANDS:
                        raise ModelfileError(f"unknown command {word!r}")
                    if word.lower() == "parameter":
                        state, buf = "parameter", []
                        continue
                    name = "model" if word.lower() == "from" else word.lower()
                else:
                    name = word
                state, buf = "value", []
            elif ch.isalpha() or (state == "parameter" and (ch.isdigit() or ch == "_")):
                buf.append(ch)
            else:
                raise ModelfileError(f"unexpected {ch!r} in a command name")
        elif state == "value":
            if ch in "\r\n \t":
                value, closed = _unquote(_go_trim("".join(buf)))
                if not closed or ch in " \t":
                    buf.append(ch)
                    continue
                commands.append((name, value))
                state, buf = "nil", []
            elif ch.isprintable():
                buf.append(ch)
    if state == "value":
        value, closed = _unquote(_go_trim("".join(buf)))
        if not closed:
            raise ModelfileError("unexpected end of file inside a quoted value")
        commands.append((name, value))
    elif state not in ("nil", "comment"):
        raise ModelfileError("unexpected end of file")
    if not any(n == "model" for n, _ in commands):
        raise ModelfileError("no FROM line")
    return commands
