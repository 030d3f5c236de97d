"""mmpush.jsonedit: edit a few keys of config.json, keep every other byte."""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

import pytest

from mmpush.jsonedit import JsonEditError, parse_object, set_values

# Mattermost-like: several sections, nested objects, arrays (of objects), escapes, number
# spellings json.dumps would not produce, and "PushNotificationServer" where it must not be
# touched: inside a string value and as a key of another section.
CONFIG = r"""{
  "ServiceSettings": {
    "SiteURL": "https:\/\/chat.example.org",
    "ListenAddress": ":8065",
    "EnableDeveloper": false,
    "MaximumLoginAttempts": 10,
    "GoroutineHealthThreshold": -1,
    "TrustedProxyIPHeader": [
      "X-Forwarded-For",
      "X-Real-IP"
    ],
    "AllowCorsFrom": ""
  },
  "TeamSettings": {
    "SiteName": "Caf\u00e9 \"Chat\" · équipe ☃",
    "CustomDescriptionText": "set \"PushNotificationServer\": \"x\" and {\"EmailSettings\": {}}",
    "MaxUsersPerTeam": 50,
    "ExperimentalDefaultChannels": []
  },
  "EmailSettings": {
    "EnableSignUpWithEmail": true,
    "SMTPPort": "10025",
    "SendPushNotifications": false,
    "PushNotificationServer": "",
    "PushNotificationContents": "full",
    "PushNotificationBuffer": 1000,
    "EmailBatchingInterval": 30
  },
  "LogSettings": {
    "EnableConsole": true,
    "ConsoleLevel": "INFO",
    "FileLevel": "INFO",
    "SampleRate": 1.0,
    "MaxSize": 1e3,
    "AdvancedLoggingJSON": {}
  },
  "PluginSettings": {
    "Enable": true,
    "Plugins": {
      "com.example.relay": {
        "PushNotificationServer": "https://not-this-one.example.org"
      }
    },
    "PluginStates": {
      "com.mattermost.calls": {
        "Enable": true
      },
      "playbooks": {
        "Enable": false
      }
    },
    "MarketplaceEntries": [
      {
        "Id": "com.mattermost.calls",
        "Version": "1.0.0"
      },
      {
        "Id": "playbooks",
        "Version": "2.0.0"
      }
    ],
    "SignaturePublicKeyFiles": []
  },
  "FeatureFlags": null
}
"""

PUSH = {
    ("EmailSettings", "PushNotificationServer"): "https://push.example.org",
    ("EmailSettings", "SendPushNotifications"): True,
    ("EmailSettings", "PushNotificationContents"): "id_loaded",
    ("LogSettings", "FileLevel"): "DEBUG",
}

# CONFIG with PUSH applied, written out by hand.
CONFIG_PUSHED = (
    CONFIG.replace('"SendPushNotifications": false', '"SendPushNotifications": true')
    .replace('"PushNotificationServer": ""', '"PushNotificationServer": "https://push.example.org"')
    .replace('"PushNotificationContents": "full"', '"PushNotificationContents": "id_loaded"')
    .replace('"FileLevel": "INFO"', '"FileLevel": "DEBUG"')
)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def value_span(text: str, line: str) -> tuple[int, int]:
    """Where the value of the one member written as ``line`` ("key": value) is in ``text``."""
    assert text.count(line) == 1, line
    start = text.index(line) + line.index(": ") + 2
    return start, text.index(line) + len(line)


def test_config_fixture_is_as_intended() -> None:
    config = parse_object(CONFIG)
    assert config["EmailSettings"]["PushNotificationServer"] == ""
    assert '"PushNotificationServer": "x"' in config["TeamSettings"]["CustomDescriptionText"]
    assert CONFIG_PUSHED != CONFIG


# --- parse_object ----------------------------------------------------------------------------


def test_parse_object_is_json_loads() -> None:
    assert parse_object(CONFIG) == json.loads(CONFIG)
    assert parse_object("\ufeff" + CONFIG) == json.loads(CONFIG)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n  "a": 1\n  "b": 2\n}', "not valid JSON: Expecting ',' delimiter at line 3 column 3"),
        ('{\n  "a": tru\n}', "not valid JSON: Expecting value at line 2 column 8"),
        ('{"a": 1} x', "not valid JSON: Extra data at line 1 column 10"),
        ("", "not valid JSON: Expecting value at line 1 column 1"),
        ('{\n  "a": "x\n"}', "not valid JSON: Invalid control character at line 2 column 10"),
        (
            '{\n  "a": NaN\n}',
            "not valid JSON: unexpected character 'N', expecting a value at line 2 column 8",
        ),
        ('{"a": -Infinity}', "not valid JSON: invalid number at line 1 column 7"),
        ('{"a": "\\x"}', "not valid JSON: Invalid \\escape at line 1 column 8"),
        ("[1, 2]", "not a JSON object: the top-level value is an array at line 1 column 1"),
        ('\n  "text"', "not a JSON object: the top-level value is a string at line 2 column 3"),
    ],
)
def test_invalid_json_says_what_and_where(text: str, message: str) -> None:
    with pytest.raises(JsonEditError) as caught:
        parse_object(text)
    assert str(caught.value) == message
    with pytest.raises(JsonEditError) as caught_by_set:
        set_values(text, {("a",): 1})
    assert str(caught_by_set.value) == message


def test_invalid_json_is_reported_before_a_bad_request() -> None:
    with pytest.raises(JsonEditError, match="not valid JSON"):
        set_values('{"a": }', {(): object()})  # type: ignore[dict-item]


def test_error_message_does_not_dump_the_file() -> None:
    broken = CONFIG.replace('"ListenAddress": ":8065",', '"ListenAddress": ":8065"')
    with pytest.raises(JsonEditError) as caught:
        set_values(broken, PUSH)
    assert str(caught.value) == "not valid JSON: Expecting ',' delimiter at line 5 column 5"


def test_bom_is_not_counted_in_positions() -> None:
    with pytest.raises(JsonEditError, match=r"at line 1 column 7$"):
        parse_object('\ufeff{"a": }')


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(JsonEditError, match="nested this deeply"):
        parse_object('{"a": ' + "[" * 5000 + "]" * 5000 + "}")


def test_text_must_be_str() -> None:
    with pytest.raises(TypeError):
        parse_object(CONFIG.encode())  # type: ignore[arg-type]


# --- Changing existing values ----------------------------------------------------------------


def test_change_one_scalar_touches_only_its_span() -> None:
    start, end = value_span(CONFIG, '"PushNotificationServer": ""')
    result = set_values(CONFIG, {("EmailSettings", "PushNotificationServer"): "https://p.example"})
    new = '"https://p.example"'
    assert result[:start] == CONFIG[:start]
    assert result[start + len(new) :] == CONFIG[end:]
    assert result[start : start + len(new)] == new


def test_change_the_keys_the_deploy_owns() -> None:
    assert set_values(CONFIG, PUSH) == CONFIG_PUSHED


def test_key_text_in_strings_and_other_sections_is_not_touched() -> None:
    result = parse_object(set_values(CONFIG, PUSH))
    assert result["TeamSettings"] == parse_object(CONFIG)["TeamSettings"]
    assert result["PluginSettings"] == parse_object(CONFIG)["PluginSettings"]


def test_keys_are_matched_after_unescaping() -> None:
    text = '{"Email\\u0053ettings": {"FileLevel": 1}}'
    assert set_values(text, {("EmailSettings", "FileLevel"): 2}) == text.replace("1", "2")


def test_non_ascii_values_are_written_as_is() -> None:
    result = set_values(CONFIG, {("TeamSettings", "SiteName"): 'Équipe ☃ "q"\n'})
    assert '"SiteName": "Équipe ☃ \\"q\\"\\n",' in result
    assert result.count("Caf\\u00e9") == 0 and CONFIG.count("Caf\\u00e9") == 1


def test_type_changes_are_changes() -> None:
    result = set_values(
        CONFIG,
        {
            ("EmailSettings", "SendPushNotifications"): 0,  # false -> 0
            ("EmailSettings", "PushNotificationBuffer"): 1000.0,  # 1000 -> 1000.0
            ("EmailSettings", "SMTPPort"): 10025,  # "10025" -> 10025
            ("FeatureFlags",): {},  # null -> {}
        },
    )
    expected = (
        CONFIG.replace('"SendPushNotifications": false', '"SendPushNotifications": 0')
        .replace('"PushNotificationBuffer": 1000', '"PushNotificationBuffer": 1000.0')
        .replace('"SMTPPort": "10025"', '"SMTPPort": 10025')
        .replace('"FeatureFlags": null', '"FeatureFlags": {}')
    )
    assert result == expected


def test_replace_with_object_uses_the_file_layout() -> None:
    value = {"com.mattermost.calls": {"Enable": False}, "new": {"Enable": True}}
    result = set_values(CONFIG, {("PluginSettings", "PluginStates"): value})
    old = CONFIG[CONFIG.index('"PluginStates": {') : CONFIG.index('    "MarketplaceEntries"')]
    new = (
        '"PluginStates": {\n'
        '      "com.mattermost.calls": {\n'
        '        "Enable": false\n'
        "      },\n"
        '      "new": {\n'
        '        "Enable": true\n'
        "      }\n"
        "    },\n"
    )
    assert result == replace_once(CONFIG, old, new)


def test_replace_array_of_objects() -> None:
    result = set_values(CONFIG, {("PluginSettings", "MarketplaceEntries"): [{"Id": "x"}, []]})
    old = CONFIG[CONFIG.index('"MarketplaceEntries": [') : CONFIG.index('    "SignaturePub')]
    new = '"MarketplaceEntries": [\n      {\n        "Id": "x"\n      },\n      []\n    ],\n'
    assert result == replace_once(CONFIG, old, new)


def test_duplicate_keys_edit_the_last_occurrence() -> None:
    text = '{\n  "A": {"k": 1},\n  "B": 1,\n  "A": {\n    "k": 2,\n    "k": 3\n  }\n}\n'
    assert json.loads(text)["A"] == {"k": 3}
    result = set_values(text, {("A", "k"): 9})
    assert result == text.replace('"k": 3', '"k": 9')
    assert set_values(text, {("A", "k"): 3}) is text  # equal to what json.loads sees
    assert set_values(text, {("A", "k"): 1}) == text.replace('"k": 3', '"k": 1')


# --- No-op and idempotency -------------------------------------------------------------------


def test_setting_equal_values_returns_the_identical_string() -> None:
    same = {
        ("EmailSettings", "PushNotificationServer"): "",
        ("EmailSettings", "SendPushNotifications"): False,
        ("ServiceSettings", "SiteURL"): "https://chat.example.org",  # written with \/
        ("LogSettings", "SampleRate"): 1.0,
        ("LogSettings", "MaxSize"): 1000.0,  # written 1e3
        ("LogSettings", "AdvancedLoggingJSON"): {},
        ("ServiceSettings", "TrustedProxyIPHeader"): ["X-Forwarded-For", "X-Real-IP"],
        ("PluginSettings", "PluginStates"): {  # key order of objects does not matter
            "playbooks": {"Enable": False},
            "com.mattermost.calls": {"Enable": True},
        },
        ("FeatureFlags",): None,
    }
    assert set_values(CONFIG, same) is CONFIG
    assert set_values(CONFIG, {}) is CONFIG


def test_equal_only_with_the_same_type() -> None:
    assert set_values(CONFIG, {("LogSettings", "SampleRate"): 1}) != CONFIG
    assert set_values(CONFIG, {("EmailSettings", "EmailBatchingInterval"): 30.0}) != CONFIG
    assert set_values(CONFIG, {("EmailSettings", "SendPushNotifications"): 0}) != CONFIG


def test_set_twice_equals_set_once() -> None:
    requests: dict[tuple[str, ...], Any] = {
        **PUSH,
        ("LogSettings", "NewKey"): [1, {"a": None}],
        ("NewSection", "Inner", "Key"): "v",
        ("LogSettings", "AdvancedLoggingJSON"): {"Targets": []},
    }
    once = set_values(CONFIG, requests)
    assert once != CONFIG
    assert set_values(once, requests) is once


# --- Inserting -------------------------------------------------------------------------------


def test_insert_missing_key_as_last_member() -> None:
    result = set_values(CONFIG, {("EmailSettings", "PushNotificationServerType"): "custom"})
    expected = replace_once(
        CONFIG,
        '    "EmailBatchingInterval": 30\n',
        '    "EmailBatchingInterval": 30,\n    "PushNotificationServerType": "custom"\n',
    )
    assert result == expected


def test_insert_into_empty_object() -> None:
    result = set_values(CONFIG, {("LogSettings", "AdvancedLoggingJSON", "console"): {"a": [1]}})
    new = (
        '"AdvancedLoggingJSON": {\n'
        '      "console": {\n'
        '        "a": [\n'
        "          1\n"
        "        ]\n"
        "      }\n"
        "    }\n"
    )
    assert result == replace_once(CONFIG, '"AdvancedLoggingJSON": {}\n', new)


def test_missing_sections_are_created_at_the_end() -> None:
    result = set_values(CONFIG, {("NewSettings", "Deep", "Enable"): True})
    expected = replace_once(
        CONFIG,
        '  "FeatureFlags": null\n}\n',
        '  "FeatureFlags": null,\n'
        '  "NewSettings": {\n'
        '    "Deep": {\n'
        '      "Enable": true\n'
        "    }\n"
        "  }\n"
        "}\n",
    )
    assert result == expected


def test_missing_intermediate_inside_an_existing_section() -> None:
    result = set_values(CONFIG, {("PluginSettings", "PluginStates", "relay", "Enable"): True})
    expected = replace_once(
        CONFIG,
        '        "Enable": false\n      }\n    },\n',
        '        "Enable": false\n      },\n      "relay": {\n        "Enable": true\n'
        "      }\n    },\n",
    )
    assert result == expected


def test_insert_into_single_line_objects_stays_on_one_line() -> None:
    text = '{"a": {"b": 1}, "c": {}}'
    assert set_values(text, {("a", "x"): [1, 2]}) == '{"a": {"b": 1, "x": [1, 2]}, "c": {}}'
    assert set_values(text, {("c", "x"): {"y": 1}}) == '{"a": {"b": 1}, "c": {"x": {"y": 1}}}'
    assert set_values("{}", {("k",): 1}) == '{"k": 1}'


def test_empty_root_of_a_multiline_file() -> None:
    assert set_values("{\n}\n", {("a", "b"): 1}) == '{\n  "a": {\n    "b": 1\n  }\n}\n'


def test_later_paths_see_earlier_edits() -> None:
    result = set_values(
        CONFIG, {("NewSection",): {"a": 1}, ("NewSection", "b"): 2, ("NewSection", "a"): 3}
    )
    assert parse_object(result)["NewSection"] == {"a": 3, "b": 2}
    assert result.endswith('"NewSection": {\n    "a": 3,\n    "b": 2\n  }\n}\n')


# --- Refused requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            ("ServiceSettings", "SiteURL", "Host"),
            "cannot set ServiceSettings.SiteURL.Host: ServiceSettings.SiteURL is a string,"
            " not an object, at line 3 column 16",
        ),
        (
            ("FeatureFlags", "X"),
            "cannot set FeatureFlags.X: FeatureFlags is null, not an object, at line 64 column 19",
        ),
        (
            ("PluginSettings", "MarketplaceEntries", "0", "Id"),
            "cannot set PluginSettings.MarketplaceEntries.0.Id: PluginSettings.MarketplaceEntries"
            " is an array, not an object, at line 52 column 27",
        ),
    ],
)
def test_non_object_intermediate_is_refused(path: tuple[str, ...], message: str) -> None:
    with pytest.raises(JsonEditError) as caught:
        set_values(CONFIG, {path: 1})
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ((), 1, "a key path must be a non-empty tuple of str"),
        ("EmailSettings.FileLevel", 1, "a key path must be a non-empty tuple of str"),
        (("a", 1), 1, "a key path must be a non-empty tuple of str"),
        (("a",), float("nan"), "cannot set a: nan is not allowed in JSON"),
        (("a",), [float("inf")], "cannot set a: inf is not allowed in JSON"),
        (("a",), {1: "x"}, "cannot set a: object key 1 is not a string"),
        (("a", "b.c"), {"x", "y"}, "cannot set ('a', 'b.c'): set is not a JSON type"),
        (("a",), (1, 2), "cannot set a: tuple is not a JSON type"),
    ],
)
def test_bad_requests_are_refused(path: Any, value: Any, message: str) -> None:
    with pytest.raises(JsonEditError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        set_values(CONFIG, {path: value})


# --- Line endings, indentation, BOM ----------------------------------------------------------


REQUESTS: dict[tuple[str, ...], Any] = {
    **PUSH,
    ("LogSettings", "AdvancedLoggingJSON"): {"console": {"Type": "console"}},
    ("EmailSettings", "Extra"): [1, "é"],
    ("NewSection", "Key"): {"List": [{}]},
}


def test_crlf_line_endings_are_kept() -> None:
    crlf = CONFIG.replace("\n", "\r\n")
    result = set_values(crlf, REQUESTS)
    assert result == set_values(CONFIG, REQUESTS).replace("\n", "\r\n")
    assert result.count("\n") == result.count("\r\n")


def test_bom_is_kept() -> None:
    result = set_values("\ufeff" + CONFIG, REQUESTS)
    assert result == "\ufeff" + set_values(CONFIG, REQUESTS)
    assert set_values("\ufeff" + CONFIG, {}) == "\ufeff" + CONFIG


def test_no_trailing_newline_is_kept() -> None:
    bare = CONFIG.rstrip("\n")
    assert set_values(bare, REQUESTS) == set_values(CONFIG, REQUESTS).rstrip("\n")


def test_other_trailing_whitespace_is_kept() -> None:
    padded = "\n\n  " + CONFIG + "  \n\n"
    assert set_values(padded, PUSH) == "\n\n  " + CONFIG_PUSHED + "  \n\n"


@pytest.mark.parametrize("indent", ["\t", 4, 1])
def test_indentation_of_the_file_is_followed(indent: str | int) -> None:
    config = parse_object(CONFIG)
    text = json.dumps(config, indent=indent, ensure_ascii=False)
    expected = copy.deepcopy(config)
    for path, value in REQUESTS.items():
        target = expected
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    assert set_values(text, REQUESTS) == json.dumps(expected, indent=indent, ensure_ascii=False)


def test_the_shipped_mattermost_config() -> None:
    """The emulator's copy of a real config.json (4-space indent, no trailing newline)."""
    path = Path(__file__).parents[1] / "emulators" / "mattermost" / "config.json"
    if not path.exists():
        pytest.skip(f"{path} is not there")
    text = path.read_text(encoding="utf-8")
    once = set_values(text, REQUESTS)
    assert set_values(once, REQUESTS) is once
    expected = json.loads(text)
    for (section, key), value in PUSH.items():
        expected[section][key] = value
    expected["LogSettings"]["AdvancedLoggingJSON"] = {"console": {"Type": "console"}}
    expected["EmailSettings"]["Extra"] = [1, "é"]
    expected["NewSection"] = {"Key": {"List": [{}]}}
    assert json.loads(once) == expected
    # Every line that went away holds an edited key, or only gained a comma.
    diff = list(difflib.ndiff(text.splitlines(), once.splitlines()))
    removed = [line[2:] for line in diff if line.startswith("- ")]
    added = {line[2:] for line in diff if line.startswith("+ ")}
    edited_keys = ["FileLevel", "AdvancedLoggingJSON", "PushNotification", "SendPushNotif"]
    for line in removed:
        assert any(key in line for key in edited_keys) or line + "," in added, line
    # AdvancedLoggingJSON {} -> 5 lines, "Extra": [...] 4 lines, "NewSection": {...} 7 lines.
    assert len(once.splitlines()) == len(text.splitlines()) + 4 + 4 + 7
    assert once.endswith("\n") == text.endswith("\n")


# --- Property test ---------------------------------------------------------------------------


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON with the same types all the way down (the test's own copy of the rule)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_json, a, b))
    return bool(a == b)


def model(obj: dict[str, Any], updates: dict[tuple[str, ...], Any]) -> dict[str, Any] | None:
    """``obj`` with ``updates`` applied the way set_values promises, or None for an error."""
    obj = copy.deepcopy(obj)
    for path, value in updates.items():
        target = obj
        for key in path[:-1]:
            if key not in target:
                target[key] = {}
            if not isinstance(target[key], dict):
                return None
            target = target[key]
        if path[-1] not in target or not same_json(target[path[-1]], value):
            target[path[-1]] = copy.deepcopy(value)
    return obj


def test_property_result_is_what_json_dumps_would_write() -> None:
    """Random objects, as json.dumps writes them, with random key paths set.

    For text json.dumps wrote, set_values must give exactly what json.dumps writes for the
    updated object: new keys go last, and the layout (indent, CRLF, BOM, final newline) is kept.
    """
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    keys = st.text(max_size=6)
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    values = st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3)
        ),
        max_leaves=8,
    )
    objects = st.dictionaries(keys, values, min_size=1, max_size=5)

    @st.composite
    def paths(draw: Any, obj: dict[str, Any]) -> tuple[str, ...]:
        path: list[str] = []
        node: Any = obj
        for _ in range(draw(st.integers(1, 3))):
            existing = sorted(node) if isinstance(node, dict) else []
            key = draw(st.sampled_from(existing) | keys if existing else keys)
            path.append(key)
            node = node.get(key) if isinstance(node, dict) else None
        return tuple(path)

    @settings(max_examples=100, deadline=None)
    @given(
        data=st.data(),
        obj=objects,
        indent=st.sampled_from([None, 1, 2, 4, "\t"]),
        crlf=st.booleans(),
        bom=st.booleans(),
        final_newline=st.booleans(),
    )
    def check(
        data: Any, obj: dict[str, Any], indent: Any, crlf: bool, bom: bool, final_newline: bool
    ) -> None:
        updates = data.draw(st.dictionaries(paths(obj), values, min_size=1, max_size=3))

        def layout(value: dict[str, Any]) -> str:
            text = json.dumps(value, indent=indent, ensure_ascii=False)
            text = ("\ufeff" if bom else "") + text + ("\n" if final_newline else "")
            return text.replace("\n", "\r\n") if crlf else text

        text = layout(obj)
        expected = model(obj, updates)
        if expected is None:
            with pytest.raises(JsonEditError, match="not an object"):
                set_values(text, updates)
            return
        result = set_values(text, updates)
        assert same_json(parse_object(result), expected)
        assert result == layout(expected)
        if not any(a != b and a == b[: len(a)] for a in updates for b in updates):
            assert set_values(result, updates) is result  # idempotent unless paths nest

    check()
