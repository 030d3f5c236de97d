"""Surgical edits of a JSON object text that keep every other byte as it was.

Mattermost writes ``config.json`` itself and admins edit it by hand; the deploy must change
only the few keys it owns. :func:`set_values` finds each key path with a small
position-tracking scanner over the JSON grammar, replaces (or inserts) only that value's text,
and leaves the rest of the file -- key order, spacing, escapes, number spelling, line endings,
a UTF-8 BOM, a missing trailing newline -- exactly as it was. Setting a value that is already
there returns the identical string, so a re-run of the deploy changes nothing.

Example::

    >>> text = '{\\n  "EmailSettings": {\\n    "SendPushNotifications": false\\n  }\\n}'
    >>> print(set_values(text, {("EmailSettings", "SendPushNotifications"): True}))
    {
      "EmailSettings": {
        "SendPushNotifications": true
      }
    }

Positions in error messages (``line L column C``, both 1-based) do not count a leading BOM.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = ["JSONValue", "JsonEditError", "parse_object", "set_values"]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

_BOM = "\ufeff"
_WHITESPACE = " \t\n\r"
_DIGITS = "0123456789"
_HEX_DIGITS = "0123456789abcdefABCDEF"
_SIMPLE_ESCAPES = '"\\/bfnrt'
_DEFAULT_INDENT_UNIT = "  "


class JsonEditError(ValueError):
    """The JSON text or a requested edit is not acceptable.

    The message says what is wrong and where (``line L column C``); it never quotes the file.
    """


def parse_object(text: str) -> dict[str, JSONValue]:
    """Parse ``text`` like :func:`json.loads`, but insist on a top-level JSON object.

    A leading UTF-8 BOM is accepted. Anything else that is not strict JSON (RFC 8259) raises
    :class:`JsonEditError`, e.g. ``not valid JSON: Expecting ',' delimiter at line 3 column 5``;
    unlike :func:`json.loads` this includes ``NaN`` and ``Infinity``.

        >>> parse_object('{"LogSettings": {"FileLevel": "INFO"}}')
        {'LogSettings': {'FileLevel': 'INFO'}}
    """
    return _load(text).parsed


def set_values(text: str, values: Mapping[tuple[str, ...], JSONValue]) -> str:
    """Return ``text`` with each key path set to its value; everything else byte-for-byte unchanged.

        >>> text = '{"EmailSettings": {"SendPushNotifications": false}}'
        >>> set_values(text, {("EmailSettings", "SendPushNotifications"): True})
        '{"EmailSettings": {"SendPushNotifications": true}}'

    - Only the value's own text is replaced. Scalars are written with
      ``json.dumps(value, ensure_ascii=False)``; objects and arrays are written the way the
      file is laid out (its newline and indent unit, 2 spaces if it has none).
    - A value that is already equal as JSON, type included (``true`` is not ``1``, ``1`` is
      not ``1.0``, key order of objects does not matter), is left untouched: a no-op returns
      the identical string.
    - A missing key is inserted as the last member of its object, indented like its siblings.
      Missing intermediate objects are created the same way. An intermediate that exists but
      is not an object raises :class:`JsonEditError` naming the path. An object written on
      one line (``{"a": 1}``) gets the new member on that line too.
    - With duplicate keys in an object the last occurrence is the one edited and descended
      into, because it is the one :func:`json.loads` (and Go) keep.
    - Paths are applied in the mapping's order, each to the result of the previous ones.

    Invalid JSON raises :class:`JsonEditError` before anything else. As a safety net the
    result is parsed again and must equal the input's value with ``values`` applied.
    """
    document = _load(text)
    for path, value in values.items():
        _check_path(path)
        problem = _json_problem(value)
        if problem is not None:
            raise JsonEditError(f"cannot set {_show(path)}: {problem}")

    body = document.body
    expected = document.parsed
    for path, value in values.items():
        body = _set_one(body, path, value)
        _apply(expected, path, copy.deepcopy(value))

    result = document.bom + body
    if result == text:
        return text
    try:
        edited = _load(result).parsed
    except JsonEditError as exc:
        raise JsonEditError(f"internal error: the edited text is not valid JSON ({exc})") from None
    if not _same_json(edited, expected):
        raise JsonEditError("internal error: the edited text does not parse to the expected value")
    return result


# --- Loading -------------------------------------------------------------------------------


@dataclass
class _Document:
    bom: str  # "\ufeff" or ""
    body: str  # the text after the BOM
    parsed: dict[str, Any]
    root: _Node


def _load(text: str) -> _Document:
    """Check ``text`` with json.loads (for its messages) and with the scanner (for strictness)."""
    if not isinstance(text, str):
        raise TypeError(f"expected the JSON text as str, got {type(text).__name__}")
    bom = _BOM if text.startswith(_BOM) else ""
    body = text[len(bom) :]
    try:
        parsed = json.loads(body)
        root = _Scanner(body).document()
    except json.JSONDecodeError as exc:
        what = exc.msg.removesuffix(" at")  # "Invalid control character at"
        raise JsonEditError(
            f"not valid JSON: {what} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise JsonEditError("cannot handle JSON nested this deeply") from None
    if root.kind != "object":
        raise JsonEditError(
            f"not a JSON object: the top-level value is {_describe(root.kind)}"
            f" at {_where(body, root.start)}"
        )
    return _Document(bom, body, parsed, root)


# --- Scanner -------------------------------------------------------------------------------


@dataclass
class _Node:
    """One JSON value found in the text: its kind and its span ``text[start:end]``."""

    kind: str  # "object", "array", "string", "number", "true", "false" or "null"
    start: int
    end: int
    members: list[_Member] = field(default_factory=list)  # objects, in text order
    items: list[_Node] = field(default_factory=list)  # arrays

    def last_member(self, key: str) -> _Member | None:
        """The member named ``key``; with duplicate keys the last one, as json.loads keeps."""
        for member in reversed(self.members):
            if member.key == key:
                return member
        return None


@dataclass
class _Member:
    """One ``"key": value`` of an object; ``key_start`` is where its opening quote is."""

    key: str
    key_start: int
    value: _Node


class _Scanner:
    """Recursive-descent scanner for strict JSON (RFC 8259) that records where each value is."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def document(self) -> _Node:
        self._skip_whitespace()
        node = self._value()
        self._skip_whitespace()
        if self.pos != len(self.text):
            raise self._error("extra data after the top-level value")
        return node

    def _error(self, what: str, pos: int | None = None) -> JsonEditError:
        where = _where(self.text, self.pos if pos is None else pos)
        return JsonEditError(f"not valid JSON: {what} at {where}")

    def _next_is(self, chars: str) -> bool:
        """Whether the next character is one of ``chars`` (False at the end of the text)."""
        return self.pos < len(self.text) and self.text[self.pos] in chars

    def _expect(self, char: str) -> None:
        if not self._next_is(char):
            raise self._error(f"expecting {char!r}")
        self.pos += 1

    def _skip_whitespace(self) -> None:
        while self._next_is(_WHITESPACE):
            self.pos += 1

    def _value(self) -> _Node:
        if self.pos >= len(self.text):
            raise self._error("unexpected end of text, expecting a value")
        char = self.text[self.pos]
        if char == "{":
            return self._object()
        if char == "[":
            return self._array()
        if char == '"':
            return self._string()
        if char == "-" or char in _DIGITS:
            return self._number()
        for word in ("true", "false", "null"):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return _Node(word, self.pos - len(word), self.pos)
        raise self._error(f"unexpected character {char!r}, expecting a value")

    def _object(self) -> _Node:
        node = _Node("object", self.pos, self.pos)
        self._expect("{")
        self._skip_whitespace()
        if self._next_is("}"):
            self.pos += 1
            node.end = self.pos
            return node
        while True:
            if not self._next_is('"'):
                raise self._error("expecting a string key")
            key = self._string()
            self._skip_whitespace()
            self._expect(":")
            self._skip_whitespace()
            value = self._value()
            name = json.loads(self.text[key.start : key.end])  # resolves the escapes
            node.members.append(_Member(name, key.start, value))
            self._skip_whitespace()
            if self._next_is(","):
                self.pos += 1
                self._skip_whitespace()
            elif self._next_is("}"):
                self.pos += 1
                node.end = self.pos
                return node
            else:
                raise self._error("expecting ',' or '}' after an object member")

    def _array(self) -> _Node:
        node = _Node("array", self.pos, self.pos)
        self._expect("[")
        self._skip_whitespace()
        if self._next_is("]"):
            self.pos += 1
            node.end = self.pos
            return node
        while True:
            node.items.append(self._value())
            self._skip_whitespace()
            if self._next_is(","):
                self.pos += 1
                self._skip_whitespace()
            elif self._next_is("]"):
                self.pos += 1
                node.end = self.pos
                return node
            else:
                raise self._error("expecting ',' or ']' after an array item")

    def _string(self) -> _Node:
        start = self.pos
        self._expect('"')
        while True:
            if self.pos >= len(self.text):
                raise self._error("unterminated string", start)
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return _Node("string", start, self.pos)
            if char == "\\":
                self._escape()
            elif char < " ":
                raise self._error("control character in string")
            else:
                self.pos += 1

    def _escape(self) -> None:
        """Skip one escape sequence: a backslash and ``"\\/bfnrt``, or ``uXXXX``."""
        backslash = self.pos
        self.pos += 1
        if self._next_is(_SIMPLE_ESCAPES):
            self.pos += 1
            return
        if self._next_is("u"):
            digits = self.text[self.pos + 1 : self.pos + 5]
            if len(digits) == 4 and all(digit in _HEX_DIGITS for digit in digits):
                self.pos += 5
                return
        raise self._error("invalid escape in string", backslash)

    def _number(self) -> _Node:
        start = self.pos
        if self._next_is("-"):
            self.pos += 1
        if self._next_is("0"):
            self.pos += 1
        elif self._next_is("123456789"):
            self._digits()
        else:
            raise self._error("invalid number", start)
        if self._next_is("."):
            self.pos += 1
            if not self._next_is(_DIGITS):
                raise self._error("invalid number", start)
            self._digits()
        if self._next_is("eE"):
            self.pos += 1
            if self._next_is("+-"):
                self.pos += 1
            if not self._next_is(_DIGITS):
                raise self._error("invalid number", start)
            self._digits()
        return _Node("number", start, self.pos)

    def _digits(self) -> None:
        while self._next_is(_DIGITS):
            self.pos += 1


# --- Editing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    """How the file is laid out: its line ending and one level of indentation."""

    newline: str
    unit: str


def _set_one(body: str, path: tuple[str, ...], value: JSONValue) -> str:
    """``body`` with one key path set (or ``body`` itself if the value is already there)."""
    root = _Scanner(body).document()
    parent = root
    for depth, key in enumerate(path[:-1]):
        member = parent.last_member(key)
        if member is None:
            nested = _nest(path[depth + 1 :], value)
            return _insert_member(body, root, parent, key, nested)
        if member.value.kind != "object":
            raise JsonEditError(
                f"cannot set {_show(path)}: {_show(path[: depth + 1])} is"
                f" {_describe(member.value.kind)}, not an object,"
                f" at {_where(body, member.value.start)}"
            )
        parent = member.value

    member = parent.last_member(path[-1])
    if member is None:
        return _insert_member(body, root, parent, path[-1], value)
    old = member.value
    if _same_json(json.loads(body[old.start : old.end]), value):
        return body
    indent = _line_indent(body, member.key_start)
    new = _render(value, indent, _style(body, root), _is_multiline(body, root, parent))
    return body[: old.start] + new + body[old.end :]


def _insert_member(body: str, root: _Node, obj: _Node, key: str, value: JSONValue) -> str:
    """``body`` with ``"key": value`` added as the last member of the object ``obj``."""
    name = json.dumps(key, ensure_ascii=False) + ": "
    if not _is_multiline(body, root, obj):
        member = name + json.dumps(value, ensure_ascii=False)
        if obj.members:
            after = obj.members[-1].value.end
            return body[:after] + ", " + member + body[after:]
        return body[: obj.start + 1] + member + body[obj.end - 1 :]

    style = _style(body, root)
    if obj.members:
        last = obj.members[-1]
        indent = _line_indent(body, last.key_start)
        member = name + _render(value, indent, style, multiline=True)
        after = last.value.end
        return body[:after] + "," + style.newline + indent + member + body[after:]

    # An empty object (maybe with whitespace inside): write it out the way Mattermost does.
    outer = _line_indent(body, obj.start)
    indent = outer + style.unit
    member = name + _render(value, indent, style, multiline=True)
    inside = style.newline + indent + member + style.newline + outer
    return body[: obj.start + 1] + inside + body[obj.end - 1 :]


def _render(value: JSONValue, indent: str, style: _Style, multiline: bool) -> str:
    """``value`` as JSON text for a place whose line is indented by ``indent``."""
    if not multiline or not isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    text = json.dumps(value, ensure_ascii=False, indent=style.unit)
    # json.dumps escapes newlines inside strings, so every "\n" here is a line break.
    return text.replace("\n", style.newline + indent)


def _is_multiline(body: str, root: _Node, obj: _Node) -> bool:
    """Whether members of ``obj`` go on lines of their own (else on one line, as in ``{"a": 1}``).

    An object decides by its first member; an empty one follows the file as a whole.
    """
    if obj.members:
        return "\n" in body[obj.start : obj.members[0].key_start]
    return "\n" in body[root.start : root.end]


def _style(body: str, root: _Node) -> _Style:
    first_newline = body.find("\n")
    newline = "\r\n" if first_newline > 0 and body[first_newline - 1] == "\r" else "\n"
    return _Style(newline, _indent_unit(body, root))


def _indent_unit(body: str, root: _Node) -> str:
    """One level of indentation: how much deeper the first child on its own line is indented."""
    for node in _containers(root):
        starts = [member.key_start for member in node.members] or [i.start for i in node.items]
        if not starts or not _starts_line(body, starts[0]):
            continue
        outer = _line_indent(body, node.start)
        inner = _line_indent(body, starts[0])
        if inner.startswith(outer) and len(inner) > len(outer):
            return inner[len(outer) :]
    return _DEFAULT_INDENT_UNIT


def _containers(node: _Node) -> Iterator[_Node]:
    """``node`` and the objects and arrays inside it, in text order."""
    yield node
    for child in [member.value for member in node.members] + node.items:
        if child.kind in ("object", "array"):
            yield from _containers(child)


def _line_indent(body: str, pos: int) -> str:
    """The spaces and tabs at the start of the line that holds ``pos``."""
    start = body.rfind("\n", 0, pos) + 1
    end = start
    while end < pos and body[end] in " \t":
        end += 1
    return body[start:end]


def _starts_line(body: str, pos: int) -> bool:
    """Whether only indentation comes before ``pos`` on its line."""
    start = body.rfind("\n", 0, pos) + 1
    return body[start:pos] == _line_indent(body, pos)


def _nest(keys: tuple[str, ...], value: JSONValue) -> JSONValue:
    """``value`` wrapped in one object per key: ``("a", "b"), 1`` gives ``{"a": {"b": 1}}``."""
    for key in reversed(keys):
        value = {key: value}
    return value


# --- Values --------------------------------------------------------------------------------


def _apply(obj: dict[str, Any], path: tuple[str, ...], value: JSONValue) -> None:
    """Set ``path`` in the parsed ``obj`` the way the text edit does (the safety net's model)."""
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = value


def _check_path(path: object) -> None:
    if not (isinstance(path, tuple) and path and all(isinstance(key, str) for key in path)):
        raise JsonEditError(f"a key path must be a non-empty tuple of str, got {path!r}")


def _json_problem(value: object) -> str | None:
    """Why ``value`` cannot be written as JSON, or None if it can."""
    if value is None or isinstance(value, (bool, int, str)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not allowed in JSON"
    if isinstance(value, list):
        children = value
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                return f"object key {key!r} is not a string"
        children = list(value.values())
    else:
        return f"{type(value).__name__} is not a JSON type"
    for child in children:
        problem = _json_problem(child)
        if problem is not None:
            return problem
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "bool"
    for kind in (int, float, str, list, dict):
        if isinstance(value, kind):
            return kind.__name__
    return type(value).__name__


def _same_json(a: object, b: object) -> bool:
    """Equal as JSON values with the same types all the way down (``1 != 1.0 != true``)."""
    kind = _json_type(a)
    if kind != _json_type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_json, a, b))
    return a == b


# --- Messages ------------------------------------------------------------------------------


def _where(text: str, pos: int) -> str:
    """``line L column C`` of ``pos``, counted like json.JSONDecodeError does."""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {column}"


_KIND_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "true": "true",
    "false": "false",
    "null": "null",
}


def _describe(kind: str) -> str:
    return _KIND_NAMES[kind]


def _show(path: tuple[str, ...]) -> str:
    """A key path for messages: ``EmailSettings.PushNotificationServer`` when unambiguous."""
    if all(key and "." not in key for key in path):
        return ".".join(path)
    return repr(path)
