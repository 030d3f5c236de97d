"""Surgical edits of Mattermost's config.json that keep every other byte as it was, and the
value Mattermost will read from it.

Mattermost writes ``config.json`` itself and admins edit it by hand; the deploy must change
only the few keys it owns. :func:`set_values` finds each key path with a small
position-tracking scanner over the JSON grammar, replaces (or inserts) only those values' text,
and leaves the rest of the file -- key order, spacing, escapes, number spelling, line endings,
a UTF-8 BOM, a missing trailing newline -- exactly as it was. Setting a value that is already
there returns the identical string, so a re-run of the deploy changes nothing.
:func:`effective_value` says which value Mattermost's decoder will use for a key path.

Example::

    >>> text = '{\\n  "EmailSettings": {\\n    "SendPushNotifications": false\\n  }\\n}'
    >>> print(set_values(text, {("EmailSettings", "SendPushNotifications"): True}))
    {
      "EmailSettings": {
        "SendPushNotifications": true
      }
    }
    >>> effective_value('{"emailsettings": {"sendpushnotifications": true}}',
    ...                 ("EmailSettings", "SendPushNotifications"))
    True

Positions in error messages (``line L column C``, both 1-based) do not count a leading BOM.

How Mattermost reads config.json (and so what this module models)
-----------------------------------------------------------------

*Mattermost decodes the file with Go's encoding/json into structs.*
``server/config/file.go`` ``(*FileStore).Load`` returns the file's bytes (``io.ReadAll(f)``);
``server/config/store.go`` ``(*Store).Load`` (mattermost/mattermost commit 622dc6f4) then does
``if err = json.Unmarshal(configBytes, &loadedCfg); err != nil { return
utils.HumanizeJSONError(err, configBytes) }``, with ``"encoding/json"`` imported: no other
decoder, and any decode error (a type error included) stops the load. The target,
``server/public/model/config.go`` (commit 33b68c60), ``type Config struct``, holds the sections
as struct *values* (``EmailSettings EmailSettings``, ``LogSettings LogSettings``; only
``FeatureFlags *FeatureFlags`` is a pointer) without json tags, and the settings inside as
*pointers* (``SendPushNotifications *bool``, ``PushNotificationServer *string``,
``PushNotificationContents *string``); ``SetDefaults()`` then fills the nil ones.

*Go matches keys case-insensitively, and every matching key is decoded, in text order.*
Go's ``Unmarshal`` documentation (``src/encoding/json/decode.go``, lines 43-45 in Go 1.19):
"To unmarshal JSON into a struct, Unmarshal matches incoming object keys to the keys used by
Marshal (either the struct field name or its tag), preferring an exact match but also
accepting a case-insensitive match." ``(*decodeState).object`` reads the members in text
order and, for each key, looks the field up -- Go 1.19 decode.go 703-716:
``if i, ok := fields.nameIndex[string(key)]; ok {`` (exact) else a linear search
``if ff.equalFold(ff.nameBytes, key) {``; current Go: ``f := fields.byExactName[string(key)]``,
``if f == nil { f = fields.byFoldedName[string(foldName(key))] }`` -- and then decodes the
value into that field (decode.go 775, ``if err := d.value(subv); err != nil {``). Nothing
remembers that a field was already set, so:

- ``EmailSettings`` and ``emailsettings`` (or ``PushNotificationServer`` and
  ``PushNotificationserver``) are the same field; exactness only picks between two *fields*
  whose names fold together, which no Mattermost struct has. Which key "wins" is decided by
  text order alone, never by spelling: the last one decoded.
- A second object for a struct field is decoded *into* the struct the first one filled: the
  objects merge, field by field ("Unmarshal unmarshals the JSON into the value pointed at by
  the pointer", decode.go 30-35; a struct value is decoded in place the same way). So the value
  of ``EmailSettings.PushNotificationServer`` is the last ``PushNotificationServer``-like key
  in text order across *all* ``EmailSettings``-like objects.
- ``null`` "unmarshals into an interface, map, pointer, or slice by setting that Go value to
  nil ... into any other Go type has no effect" (decode.go 88-91; ``literalStore``, decode.go
  903-913). A ``null`` setting (a pointer) therefore resets it to nil, i.e. to Mattermost's
  default; a ``null`` section (a struct value) is ignored. A ``null`` *after* an object of
  the same name keeps that object for a struct but drops it for a pointer (``FeatureFlags``):
  this module refuses that case rather than guess.
- A value of the wrong kind ("EmailSettings": "x") makes ``Unmarshal`` return an
  ``UnmarshalTypeError`` (decode.go 80-84) and Mattermost refuses to load the file.
- The case folding is Unicode simple folding: ASCII letters fold to upper case, and the only
  non-ASCII characters that fold onto ASCII are U+017F LATIN SMALL LETTER LONG S (to ``S``)
  and U+212A KELVIN SIGN (to ``K``) (Go 1.19 ``fold.go``: ``kelvin``, ``smallLongEss``,
  ``equalFoldRight``; current Go ``foldName``/``foldRune``). A sweep of every rune with Go
  1.19's ``unicode.SimpleFold`` finds no other; U+0130 and U+0131 (dotted I, dotless i) fold
  to themselves.

All of this was checked against Go 1.19.8 (Debian 12 ``golang-go``) decoding into structs shaped
like Mattermost's; the cases are in tests/unit/test_jsonedit.py (``GO_DECODED``).

After it has loaded the file, Mattermost writes its whole config back when it differs from
what it held (store.go ``(*Store).Load``: ``if !s.readOnly && (hasChanged || ...)``), with
``json.MarshalIndent``: the duplicates then disappear and the winners stay.

*What this module does with that.* Every key of a path is treated as a struct field (true for
the keys the deploy owns: ``EmailSettings.*``, ``LogSettings.*``; not for map keys such as the
plugin ids under ``PluginSettings.Plugins``, which Go matches exactly).

- :func:`set_values` writes the new value into *every* member Go maps to the field, in every
  object Go merges into its parent, so the value is right whichever of them a reader takes
  (Go's last one, ``json.loads``'s last exact one, a person's first one). Those members all
  name the field the deploy owns, so "only the keys we own change" still holds; none is
  removed (that would change more bytes and drop what an admin wrote). A missing setting is
  inserted into every such parent object. A no-op still returns the identical string.
- :func:`effective_value` returns the value Go puts into the field, or :data:`MISSING` when
  Go leaves it nil (absent, or ``null``).
- A key of the path that holds a non-object (a type error for Go), or a ``null`` after an
  object of the same name, raises :class:`JsonEditError` naming it.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "MISSING",
    "JSONValue",
    "JsonEditError",
    "Missing",
    "effective_value",
    "go_fold",
    "parse_object",
    "set_values",
]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

_BOM = "\ufeff"
_WHITESPACE = frozenset(" \t\n\r")
_INDENT = " \t"
_COMMA = frozenset(",")
_DIGITS = frozenset("0123456789")
_NUMBER_STARTS = frozenset("-0123456789")
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_WORDS = ("true", "false", "null")
_DEFAULT_INDENT_UNIT = "  "
#: json.dumps writing non-ASCII characters as they are, as Mattermost does.
_dumps = functools.partial(json.dumps, ensure_ascii=False)
#: The only non-ASCII characters whose Unicode simple case folding reaches ASCII (Go's sweep).
_FOLDS_TO_ASCII: Final = {"\u017f": "S", "\u212a": "K"}


class JsonEditError(ValueError):
    """The JSON text or a requested edit is not acceptable.

    The message says what is wrong and where (``line L column C``); it never quotes the file.
    """


class Missing(enum.Enum):
    """The type of :data:`MISSING`."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    __str__ = __repr__


#: What :func:`effective_value` returns when Go leaves the field nil (absent, or ``null``):
#: Mattermost then uses its default.
MISSING: Final = Missing.MISSING


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
        >>> set_values('{"A": {"b": 1}, "a": {"B": 2}}', {("A", "b"): 3})
        '{"A": {"b": 3}, "a": {"B": 3}}'

    - Keys match the way Go's encoding/json matches struct fields (see the module docstring):
      every member whose key folds to the path's key is set, in every object Go merges into
      the parent, so Mattermost reads the new value whatever the order and spelling.
    - Only the values' own text is replaced. Scalars are written with
      ``json.dumps(value, ensure_ascii=False)``; objects and arrays are written the way the
      file is laid out (its newline and indent unit, 2 spaces if it has none).
    - A value that is already equal as JSON, type included (``true`` is not ``1``, ``1`` is
      not ``1.0``, key order of objects does not matter), is left untouched: when all of them
      are, the identical string is returned.
    - A missing key is inserted as the last member of its object (of each such object),
      indented like its siblings. Missing intermediate objects are created the same way. An
      object written on one line (``{"a": 1}``) gets the new member on that line too.
    - An intermediate that exists but is not an object (or is ``null`` after an object of the
      same name) raises :class:`JsonEditError` naming the path.
    - Paths are applied in the mapping's order, each to the result of the previous ones.

    Invalid JSON raises :class:`JsonEditError` before anything else. As a safety net the
    result is parsed again and must hold exactly the members of the input with the same
    edits applied to them.
    """
    document = _load(text)
    for path, value in values.items():
        _check_path(path)
        problem = _json_problem(value)
        if problem is not None:
            raise JsonEditError(f"cannot set {_show(path)}: {problem}")

    body = document.body
    for path, value in values.items():
        body = _set_one(body, path, value)

    result = document.bom + body
    if result == text:
        return text
    _check_edit(document.body, body, values)
    return result


def effective_value(
    document: str | Mapping[str, Any], keys: tuple[str, ...]
) -> JSONValue | Literal[Missing.MISSING]:
    """The value Mattermost (Go's encoding/json) decodes into the field ``keys``, or MISSING.

        >>> text = '{"EmailSettings": {"PushNotificationServer": "a"},'
        >>> text += ' "emailsettings": {"pushnotificationserver": "b"}}'
        >>> effective_value(text, ("EmailSettings", "PushNotificationServer"))
        'b'
        >>> effective_value('{"EmailSettings": {}}', ("EmailSettings", "SendPushNotifications"))
        MISSING

    ``document`` is the JSON text, or an already parsed mapping (e.g. from :func:`json.loads`).
    A mapping has lost the order of keys that differ only in case, and with it the answer:
    when a level of the path has several such keys, pass the text (JsonEditError otherwise).

    MISSING means Go leaves the field nil (no such key, or the last one is ``null``), so
    Mattermost uses its default. An object value is returned as :func:`json.loads` gives it;
    when several different objects name the field, Go merges them field by field, so ask for
    a field inside instead (JsonEditError). A path through a non-object raises JsonEditError,
    as it makes Mattermost refuse the file.
    """
    _check_path(keys)
    if isinstance(document, str):
        text = document
    elif isinstance(document, Mapping):
        problem = _json_problem(dict(document))
        if problem is not None:
            raise JsonEditError(f"cannot read {_show(keys)}: the mapping is not JSON: {problem}")
        _check_unambiguous(document, keys)
        text = json.dumps(document)
    else:
        raise TypeError(f"expected JSON text or a mapping, got {type(document).__name__}")
    loaded = _load(text)
    found = _find(loaded.body, loaded.root, keys, "read")
    return _winner(loaded.body, keys, found.members)


def go_fold(name: str) -> str:
    """``name`` folded the way Go's encoding/json compares object keys with struct fields.

    Two keys name the same field exactly when their folds are equal:

        >>> go_fold("pushNotificationServer") == go_fold("PushNotificationServer")
        True
        >>> go_fold("\\u017fendPushNotifications")  # LATIN SMALL LETTER LONG S
        'SENDPUSHNOTIFICATIONS'
        >>> go_fold("\\u0131d") == go_fold("Id")  # dotless i is not I
        False

    ASCII letters fold to upper case and U+017F / U+212A to ``S`` / ``K`` exactly as in Go.
    Other non-ASCII characters fold to the smallest code point among their one-character
    upper/lower case forms, which stands in for Go's Unicode simple-folding orbits; a lone
    surrogate folds to U+FFFD, as Go decodes it.
    """
    return "".join(_fold_char(char) for char in name)


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
    end: int = 0  # set when the scanner reaches it
    members: list[_Member] = field(default_factory=list)  # objects, in text order
    items: list[_Node] = field(default_factory=list)  # arrays


@dataclass
class _Member:
    """One ``"key": value`` of an object; ``key_start`` is where its opening quote is."""

    key: str
    key_start: int
    value: _Node


class _Scanner:
    """Records where each value of a JSON text is, for text :func:`json.loads` has accepted.

    json.loads has checked the grammar (and gives the better messages), so this only walks the
    text. The one thing it still checks is what json.loads lets through and RFC 8259 does not:
    ``NaN``, ``Infinity`` and ``-Infinity``.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def document(self) -> _Node:
        self._skip_whitespace()
        return self._value()

    def _error(self, what: str, pos: int) -> JsonEditError:
        return JsonEditError(f"not valid JSON: {what} at {_where(self.text, pos)}")

    def _next_is(self, chars: frozenset[str]) -> bool:
        """Whether the next character is one of ``chars`` (False at the end of the text)."""
        return self.pos < len(self.text) and self.text[self.pos] in chars

    def _skip_whitespace(self) -> None:
        while self._next_is(_WHITESPACE):
            self.pos += 1

    def _value(self) -> _Node:
        char = self.text[self.pos]
        if char == "{":
            return self._object()
        if char == "[":
            return self._array()
        if char == '"':
            return self._string()
        if char in _NUMBER_STARTS:
            return self._number()
        for word in _WORDS:
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return _Node(word, self.pos - len(word), self.pos)
        raise self._error(f"unexpected character {char!r}, expecting a value", self.pos)

    def _object(self) -> _Node:
        node = _Node("object", self.pos)
        self.pos += 1  # {
        self._skip_whitespace()
        while self.text[self.pos] != "}":
            key = self._string()
            self._skip_whitespace()
            self.pos += 1  # :
            self._skip_whitespace()
            value = self._value()
            name = json.loads(self.text[key.start : key.end])  # resolves the escapes
            node.members.append(_Member(name, key.start, value))
            self._skip_separator()
        self.pos += 1  # }
        node.end = self.pos
        return node

    def _array(self) -> _Node:
        node = _Node("array", self.pos)
        self.pos += 1  # [
        self._skip_whitespace()
        while self.text[self.pos] != "]":
            node.items.append(self._value())
            self._skip_separator()
        self.pos += 1  # ]
        node.end = self.pos
        return node

    def _skip_separator(self) -> None:
        """Skip the whitespace and the comma (if any) after a member or an item."""
        self._skip_whitespace()
        if self._next_is(_COMMA):
            self.pos += 1
            self._skip_whitespace()

    def _string(self) -> _Node:
        start = self.pos
        self.pos += 1  # "
        while self.text[self.pos] != '"':
            self.pos += 2 if self.text[self.pos] == "\\" else 1  # an escape: skip the next too
        self.pos += 1  # "
        return _Node("string", start, self.pos)

    def _number(self) -> _Node:
        start = self.pos
        self.pos += 1  # "-" or the first digit
        if self.text[start] == "-" and not self._next_is(_DIGITS):
            raise self._error("invalid number", start)  # -Infinity
        while self._next_is(_NUMBER_CHARS):
            self.pos += 1
        return _Node("number", start, self.pos)


# --- Go's view of a key path -----------------------------------------------------------------


def _fold_char(char: str) -> str:
    """One character of :func:`go_fold`."""
    if char.isascii():
        return char.upper()  # only a-z change
    if char in _FOLDS_TO_ASCII:
        return _FOLDS_TO_ASCII[char]
    if "\ud800" <= char <= "\udfff":
        return "\ufffd"
    # The character's simple-folding orbit, approximated: itself, its upper case, and the lower
    # case of that (final sigma -> SIGMA -> sigma; for an upper-case letter, its lower case).
    forms = (char.upper(), char.upper().lower())
    return min([char] + [form for form in forms if len(form) == 1 and not form.isascii()])


@dataclass
class _Found:
    """Where a key path leads: the objects that hold (or would hold) ``path[depth]``, and the
    members of those objects that Go decodes into that field, in text order."""

    parents: list[_Node]
    depth: int
    members: list[tuple[_Node, _Member]]


def _find(body: str, root: _Node, path: tuple[str, ...], verb: str) -> _Found:
    """Follow ``path`` the way Go decodes it; stop at the first level with no object.

    ``verb`` ("set" or "read") is for messages. Raises JsonEditError for a path through a
    non-object, or through a ``null`` that comes after an object of the same name.
    """
    parents = [root]
    for depth, key in enumerate(path):
        folded = go_fold(key)
        members = [(p, m) for p in parents for m in p.members if go_fold(m.key) == folded]
        if depth == len(path) - 1:
            break
        objects = _objects_of(body, path, depth, members, verb)
        if not objects:
            return _Found(parents, depth, [])
        parents = objects
    return _Found(parents, len(path) - 1, members)


def _objects_of(
    body: str,
    path: tuple[str, ...],
    depth: int,
    members: list[tuple[_Node, _Member]],
    verb: str,
) -> list[_Node]:
    """The object values of the members naming ``path[depth]``, which Go merges.

    A ``null`` before them is ignored (both a struct and a pointer field end up holding the
    objects); anything else that is not an object is an error, and so are only nulls when
    there is a key to set inside (for reading, the field inside is then nil).
    """
    objects: list[_Node] = []
    for _, member in members:
        value = member.value
        if value.kind == "object":
            objects.append(value)
        elif value.kind == "null" and objects:
            raise JsonEditError(
                f"cannot {verb} {_show(path)}: {_name(path, depth, member)} is null at"
                f" {_where(body, value.start)}, after an object of the same name at"
                f" {_where(body, objects[-1].start)}: Go keeps that object if the field is a"
                " struct and drops it if it is a pointer; remove one of the two"
            )
        elif value.kind != "null":
            raise _not_an_object(body, path, depth, member, verb)
    if members and not objects and verb == "set":  # only nulls: nothing to set the key in
        raise _not_an_object(body, path, depth, members[-1][1], verb)
    return objects


def _not_an_object(
    body: str, path: tuple[str, ...], depth: int, member: _Member, verb: str
) -> JsonEditError:
    return JsonEditError(
        f"cannot {verb} {_show(path)}: {_name(path, depth, member)} is"
        f" {_describe(member.value.kind)}, not an object, at {_where(body, member.value.start)}"
    )


def _winner(
    body: str, path: tuple[str, ...], members: list[tuple[_Node, _Member]]
) -> JSONValue | Literal[Missing.MISSING]:
    """The value Go keeps of the members that name the field ``path``: the last one."""
    values = [json.loads(body[m.value.start : m.value.end]) for _, m in members]
    objects = [value for value in values if isinstance(value, dict)]
    if not values:
        return MISSING
    last = values[-1]
    if last is None and objects:
        raise JsonEditError(
            f"cannot read {_show(path)}: its last key is null, after an object: Go keeps the"
            " object if the field is a struct and drops it if it is a pointer"
        )
    if any(not _same_json(value, last) for value in objects):
        raise JsonEditError(
            f"cannot read {_show(path)}: several keys hold different objects, which Go merges"
            " field by field; ask for a field inside"
        )
    return MISSING if last is None else last


def _check_unambiguous(document: Mapping[str, Any], path: tuple[str, ...]) -> None:
    """Refuse a parsed mapping where the answer depends on an order it no longer has."""
    level: Any = document
    for depth, key in enumerate(path):
        if not isinstance(level, Mapping):
            return
        folded = go_fold(key)
        same = [name for name in level if go_fold(name) == folded]
        if len(same) > 1:
            where = _show(path[:depth]) if depth else "the top level"
            raise JsonEditError(
                f"cannot read {_show(path)} from a parsed mapping: {where}"
                f" has the keys {', '.join(map(repr, same))}, which Go reads as one field;"
                " which one it keeps depends on their order in the text: pass the text"
            )
        level = level[same[0]] if same else None


def _name(path: tuple[str, ...], depth: int, member: _Member) -> str:
    """``EmailSettings``, or ``EmailSettings (written "emailsettings")`` for messages."""
    name = _show(path[: depth + 1])
    if member.key != path[depth]:
        name += f" (written {json.dumps(member.key)})"  # escaped: look-alike letters show
    return name


# --- Editing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    """How the file is laid out: its line ending and one level of indentation."""

    newline: str
    unit: str


@dataclass(frozen=True)
class _Edit:
    """Replace ``body[start:end]`` with ``text``."""

    start: int
    end: int
    text: str


def _set_one(body: str, path: tuple[str, ...], value: JSONValue) -> str:
    """``body`` with one key path set (or ``body`` itself if the value is already there)."""
    root = _Scanner(body).document()
    found = _find(body, root, path, "set")
    if found.members:
        edits = [
            _replacement(body, root, parent, member, value)
            for parent, member in found.members
            if not _same_json(json.loads(body[member.value.start : member.value.end]), value)
        ]
    else:
        nested = _nest(path[found.depth + 1 :], value)
        edits = [
            _insertion(body, root, parent, path[found.depth], nested) for parent in found.parents
        ]
    for edit in sorted(edits, key=lambda edit: edit.start, reverse=True):
        body = body[: edit.start] + edit.text + body[edit.end :]
    return body


def _replacement(body: str, root: _Node, obj: _Node, member: _Member, value: JSONValue) -> _Edit:
    """The edit that writes ``value`` over the value of ``member`` (a member of ``obj``)."""
    indent = _line_indent(body, member.key_start)
    new = _render(value, indent, _style(body, root), _members_on_lines(body, obj))
    return _Edit(member.value.start, member.value.end, new)


def _insertion(body: str, root: _Node, obj: _Node, key: str, value: JSONValue) -> _Edit:
    """The edit that adds ``"key": value`` as the last member of the object ``obj``."""
    name = _dumps(key) + ": "
    # An object decides by its first member; an empty one follows the file as a whole.
    multiline = _members_on_lines(body, obj) if obj.members else "\n" in body[root.start : root.end]
    if not multiline:
        member = name + _dumps(value)
        if obj.members:
            after = obj.members[-1].value.end
            return _Edit(after, after, ", " + member)
        return _Edit(obj.start + 1, obj.end - 1, member)

    style = _style(body, root)
    if obj.members:
        last = obj.members[-1]
        indent = _line_indent(body, last.key_start)
        member = name + _render(value, indent, style, multiline=True)
        after = last.value.end
        return _Edit(after, after, "," + style.newline + indent + member)

    # An empty object (maybe with whitespace inside): write it out the way Mattermost does.
    outer = _line_indent(body, obj.start)
    indent = outer + style.unit
    member = name + _render(value, indent, style, multiline=True)
    inside = style.newline + indent + member + style.newline + outer
    return _Edit(obj.start + 1, obj.end - 1, inside)


def _render(value: JSONValue, indent: str, style: _Style, multiline: bool) -> str:
    """``value`` as JSON text for a place whose line is indented by ``indent``."""
    if not multiline or not isinstance(value, (dict, list)):
        return _dumps(value)
    text = _dumps(value, indent=style.unit)
    # json.dumps escapes newlines inside strings, so every "\n" here is a line break.
    return text.replace("\n", style.newline + indent)


def _members_on_lines(body: str, obj: _Node) -> bool:
    """Whether the members of ``obj`` (which has some) are on lines of their own, rather than
    on one line as in ``{"a": 1}``: its first member decides."""
    return "\n" in body[obj.start : obj.members[0].key_start]


def _style(body: str, root: _Node) -> _Style:
    """The file's layout: its first line ending decides CRLF or LF (used only if it has one)."""
    newline = "\r\n" if body.partition("\n")[0].endswith("\r") else "\n"
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
    line = _line_before(body, pos)
    return line[: len(line) - len(line.lstrip(_INDENT))]


def _starts_line(body: str, pos: int) -> bool:
    """Whether only indentation comes before ``pos`` on its line."""
    return _line_before(body, pos) == _line_indent(body, pos)


def _line_before(body: str, pos: int) -> str:
    """What comes before ``pos`` on its line."""
    return body[:pos].rpartition("\n")[2]


def _nest(keys: tuple[str, ...], value: JSONValue) -> JSONValue:
    """``value`` wrapped in one object per key: ``("a", "b"), 1`` gives ``{"a": {"b": 1}}``."""
    for key in reversed(keys):
        value = {key: value}
    return value


# --- Safety net: the same edits, made on the parsed members -----------------------------------


class _Pairs:
    """A JSON object as all its members in text order, duplicates included."""

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self.items = items


def _members_of(body: str) -> _Pairs:
    """``body`` parsed by json.loads, keeping every member of every object."""
    return json.loads(body, object_pairs_hook=_Pairs)  # type: ignore[no-any-return]


def _check_edit(before: str, after: str, values: Mapping[tuple[str, ...], JSONValue]) -> None:
    """Raise JsonEditError unless ``after`` is ``before`` with ``values`` set, member by member.

    The model works on parsed values, not on positions: it catches an edit that landed in the
    wrong place, broke the JSON, or changed anything else.
    """
    try:
        edited = _members_of(after)
        _Scanner(after).document()
    except (json.JSONDecodeError, JsonEditError) as exc:
        raise JsonEditError(f"internal error: the edited text is not valid JSON ({exc})") from None
    expected = _members_of(before)
    for path, value in values.items():
        _set_members(expected, path, value)
    if not _same_json(edited, expected):
        raise JsonEditError("internal error: the edited text does not hold the expected values")


def _set_members(root: _Pairs, path: tuple[str, ...], value: JSONValue) -> None:
    """What :func:`_set_one` does to the text, done to parsed members (errors already ruled out)."""
    parents = [root]
    for depth, key in enumerate(path[:-1]):
        children = [
            child
            for parent in parents
            for name, child in parent.items
            if go_fold(name) == go_fold(key) and isinstance(child, _Pairs)
        ]
        if not children:
            for parent in parents:
                parent.items.append((key, _as_members(_nest(path[depth + 1 :], value))))
            return
        parents = children
    members = [
        (parent, index)
        for parent in parents
        for index, (name, _) in enumerate(parent.items)
        if go_fold(name) == go_fold(path[-1])
    ]
    for parent, index in members:
        name, old = parent.items[index]
        if not _same_json(_plain(old), value):
            parent.items[index] = (name, _as_members(value))
    if not members:
        for parent in parents:
            parent.items.append((path[-1], _as_members(value)))


def _as_members(value: Any) -> Any:
    """A value to be written, with its objects as _Pairs (in the order json.dumps writes)."""
    if isinstance(value, dict):
        return _Pairs([(key, _as_members(item)) for key, item in value.items()])
    if isinstance(value, list):
        return [_as_members(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    """A _Pairs tree as json.loads would give it (the last of duplicate keys wins)."""
    if isinstance(value, _Pairs):
        return {key: _plain(item) for key, item in value.items}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


# --- Values --------------------------------------------------------------------------------


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


def _json_type(value: object) -> type:
    """The JSON type of a value: bool is not int (bool is a subclass of int, so it comes first)."""
    for kind in (bool, int, float, str, list, dict, _Pairs):
        if isinstance(value, kind):
            return kind
    return type(value)  # NoneType


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values with the same types all the way down (``1 != 1.0 != true``).

    Objects compare as sets of keys (dict) or as member lists in order (_Pairs).
    """
    kind = _json_type(a)
    if kind is not _json_type(b):
        return False
    if kind is dict:
        return a.keys() == b.keys() and all(_same_json(a[key], b[key]) for key in a)
    if kind is list:
        return len(a) == len(b) and all(map(_same_json, a, b))
    if kind is _Pairs:
        return len(a.items) == len(b.items) and all(map(_same_member, a.items, b.items))
    return bool(a == b)


def _same_member(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    return a[0] == b[0] and _same_json(a[1], b[1])


# --- Messages ------------------------------------------------------------------------------


def _where(text: str, pos: int) -> str:
    """``line L column C`` of ``pos``, counted like json.JSONDecodeError does."""
    line = text[:pos].count("\n") + 1
    column = len(_line_before(text, pos)) + 1
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
