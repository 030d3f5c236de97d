"""mmpush.jsonedit: edit a few keys of config.json, keep every other byte."""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mmpush.jsonedit import (
    MISSING,
    JsonEditError,
    _check_edit,
    effective_value,
    go_fold,
    parse_object,
    set_values,
)

#: scripts/mutate sets MMPUSH_MUTATION=1: the slow tests then run fewer, repeatable examples.
UNDER_MUTATION = bool(os.environ.get("MMPUSH_MUTATION"))

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
        (" -5", "not a JSON object: the top-level value is a number at line 1 column 2"),
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
    with pytest.raises(JsonEditError, match=r"^cannot handle JSON nested this deeply$"):
        parse_object('{"a": ' + "[" * 5000 + "]" * 5000 + "}")


def test_text_must_be_str() -> None:
    with pytest.raises(TypeError, match=r"^expected the JSON text as str, got bytes$"):
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


def test_duplicate_keys_are_all_set_because_go_merges_the_objects() -> None:
    """Go decodes both "A" objects into the same struct; json.loads would keep only the last."""
    text = '{\n  "A": {"k": 1},\n  "B": 1,\n  "A": {\n    "k": 2,\n    "k": 3\n  }\n}\n'
    assert json.loads(text)["A"] == {"k": 3}
    result = set_values(text, {("A", "k"): 9})
    assert result == '{\n  "A": {"k": 9},\n  "B": 1,\n  "A": {\n    "k": 9,\n    "k": 9\n  }\n}\n'
    # Only the members that differ are rewritten.
    assert set_values(text, {("A", "k"): 3}) == text.replace('"k": 1', '"k": 3').replace(
        '"k": 2', '"k": 3'
    )
    assert set_values(result, {("A", "k"): 9}) is result


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


# --- Go's encoding/json: which key Mattermost reads ------------------------------------------

SERVER = ("EmailSettings", "PushNotificationServer")
SEND = ("EmailSettings", "SendPushNotifications")
SKIP = ("EmailSettings", "SkipServerCertificateVerification")
FEATURE = ("FeatureFlags", "TestFeature")
REFUSED = "refused"  # effective_value raises: the answer depends on the field's Go type
GO_ERROR = "Go error"  # json.Unmarshal returns an error: Mattermost refuses the file

# Recorded with Go 1.19.8 (Debian 12 golang-go): json.Unmarshal of each document into
#   type EmailSettings struct { SendPushNotifications *bool; PushNotificationServer *string;
#                               SkipServerCertificateVerification *bool; ... }
#   type Config struct { EmailSettings EmailSettings; FeatureFlags *FeatureFlags }
# (struct-valued sections and pointer settings, as in Mattermost's model.Config), then the
# field read back: a value, or MISSING for a nil pointer. Where this module refuses to guess,
# what Go did is in the comment.
GO_DECODED: list[tuple[str, tuple[str, ...], Any]] = [
    # Fold-equal keys are one field; text order decides, never the spelling.
    ('{"EmailSettings": {"PushNotificationServer": "a"},'
     ' "emailsettings": {"PushNotificationServer": "b"}}', SERVER, "b"),
    ('{"emailsettings": {"PushNotificationServer": "b"},'
     ' "EmailSettings": {"PushNotificationServer": "a"}}', SERVER, "a"),
    ('{"EmailSettings": {"PushNotificationServer": "a", "PushNotificationserver": "b"}}',
     SERVER, "b"),
    ('{"EmailSettings": {"PushNotificationserver": "b", "PushNotificationServer": "a"}}',
     SERVER, "a"),
    ('{"EmailSettings": {"PushNotificationServer": "a", "PUSHNOTIFICATIONSERVER": "b",'
     ' "pushnotificationserver": "c"}}', SERVER, "c"),
    # Sections that name the same field merge, field by field (exact duplicates too).
    ('{"EmailSettings": {"SendPushNotifications": true, "PushNotificationServer": "a"},'
     ' "emailsettings": {"pushnotificationserver": "b"}}', SEND, True),
    ('{"EmailSettings": {"SendPushNotifications": true, "PushNotificationServer": "a"},'
     ' "emailsettings": {"pushnotificationserver": "b"}}', SERVER, "b"),
    ('{"EmailSettings": {"PushNotificationServer": "a", "SendPushNotifications": false},'
     ' "EmailSettings": {"PushNotificationServer": "b"}}', SEND, False),
    # null: a pointer setting becomes nil (Mattermost's default); a struct section ignores it.
    ('{"EmailSettings": {"PushNotificationServer": "a", "pushnotificationserver": null}}',
     SERVER, MISSING),
    ('{"EmailSettings": {"PushNotificationServer": null, "pushnotificationserver": "c"}}',
     SERVER, "c"),
    ('{"emailsettings": null, "EmailSettings": {"PushNotificationServer": "a"}}', SERVER, "a"),
    ('{"EmailSettings": {"PushNotificationServer": "a"}, "emailsettings": null}',
     SERVER, REFUSED),  # Go: "a" (a struct section ignores null)
    ('{"FeatureFlags": {"TestFeature": "x"}, "featureflags": null}',
     FEATURE, REFUSED),  # Go: MISSING (a pointer section is reset by null)
    ('{"FeatureFlags": null, "featureflags": {"TestFeature": "y"}}', FEATURE, "y"),
    ('{"FeatureFlags": {"TestFeature": "x"}, "featureflags": {}}', FEATURE, "x"),
    ("{}", SERVER, MISSING),
    ('{"EmailSettings": {}}', SERVER, MISSING),
    # A section of the wrong kind is a type error: Mattermost refuses the file.
    ('{"EmailSettings": {"PushNotificationServer": "a"}, "EMAILSETTINGS": 5}', SERVER, GO_ERROR),
    ('{"EmailSettings": [1], "emailsettings": {"PushNotificationServer": "a"}}',
     SERVER, GO_ERROR),
    # Unicode simple folding: long s is S, the Kelvin sign is K; dotted/dotless i fold to
    # themselves; keys are compared after their escapes are decoded.
    ('{"EmailSettings": {"PushNotificationServer": "a"},'
     ' "Email\\u017fettings": {"PushNotification\\u017ferver": "b"}}', SERVER, "b"),
    ('{"EmailSettings": {"SkipServerCertificateVerification": false,'
     ' "S\\u212aipServerCertificateVerification": true}}', SKIP, True),
    ('{"EmailSettings": {"PushNotificationServer": "a"},'
     ' "\\u0130mailSettings": {"PushNotificationServer": "b"}}', SERVER, "a"),
    ('{"EmailSettings": {"PushNotificationServer": "a", "PushNot\\u0131ficationServer": "b"}}',
     SERVER, "a"),
    ('{"EmailSettings": {"PushNotificationServer": "a", "push\\u004eotificationServer": "b"}}',
     SERVER, "b"),
    ('{"EmailSettings": {"PushNotificationServer": "a", "PushNotification_Server": "b",'
     ' "PushNotificationServers": "c"}}', SERVER, "a"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "keys", "go_value"), GO_DECODED)
def test_effective_value_is_what_go_decodes(
    text: str, keys: tuple[str, ...], go_value: Any
) -> None:
    if go_value in (REFUSED, GO_ERROR):
        with pytest.raises(JsonEditError, match=r"^cannot read "):
            effective_value(text, keys)
        return
    actual = effective_value(text, keys)
    assert same_json(actual, go_value) if go_value is not MISSING else actual is MISSING


@pytest.mark.parametrize(("text", "keys", "go_value"), GO_DECODED)
def test_set_values_makes_go_read_the_new_value(
    text: str, keys: tuple[str, ...], go_value: Any
) -> None:
    if go_value in (REFUSED, GO_ERROR):
        with pytest.raises(JsonEditError, match=r"^cannot set "):
            set_values(text, {keys: "new"})
        return
    result = set_values(text, {keys: "new"})
    assert effective_value(result, keys) == "new"
    assert set_values(result, {keys: "new"}) is result
    # Every member that names the field holds the value: no reader gets an old one.
    names = [go_fold(key) for key in keys]
    for section, members in pairs_of(result):
        if go_fold(section) == names[0] and isinstance(members, list):
            assert all(value == "new" for key, value in members if go_fold(key) == names[1])


def pairs_of(text: str) -> list[tuple[str, Any]]:
    """Every member of the top-level object, duplicates included; objects as member lists."""
    return json.loads(text, object_pairs_hook=list)  # type: ignore[no-any-return]


def test_fold_equal_members_are_all_set_and_keep_their_spelling() -> None:
    text = (
        "{\n"
        '  "EmailSettings": {\n'
        '    "PushNotificationServer": "https://old.example.org",\n'
        '    "SendPushNotifications": true\n'
        "  },\n"
        '  "emailsettings": {\n'
        '    "pushNotificationServer": "https://older.example.org"\n'
        "  },\n"
        '  "Email\u017fettings": {}\n'
        "}\n"
    )
    result = set_values(
        text,
        {
            SERVER: "https://push.example.org",
            SEND: True,  # already true where it is: no edit, and no insertion elsewhere
            ("EmailSettings", "PushNotificationContents"): "id_loaded",  # missing: everywhere
        },
    )
    assert result == (
        "{\n"
        '  "EmailSettings": {\n'
        '    "PushNotificationServer": "https://push.example.org",\n'
        '    "SendPushNotifications": true,\n'
        '    "PushNotificationContents": "id_loaded"\n'
        "  },\n"
        '  "emailsettings": {\n'
        '    "pushNotificationServer": "https://push.example.org",\n'
        '    "PushNotificationContents": "id_loaded"\n'
        "  },\n"
        '  "Email\u017fettings": {\n'
        '    "PushNotificationContents": "id_loaded"\n'
        "  }\n"
        "}\n"
    )
    assert effective_value(result, SERVER) == "https://push.example.org"
    assert effective_value(result, SEND) is True


def test_a_stale_lower_case_section_no_longer_wins() -> None:
    """The issue's case: a leftover "emailsettings" after the real section."""
    text = CONFIG.replace(
        '  "LogSettings": {',
        '  "emailsettings": {\n    "PushNotificationserver": "https://stale.example.org"\n  },\n'
        '  "LogSettings": {',
    )
    assert effective_value(text, SERVER) == "https://stale.example.org"
    result = set_values(text, PUSH)
    assert effective_value(result, SERVER) == "https://push.example.org"
    # Only the stale member changes there: the other keys exist in the real section.
    expected = CONFIG_PUSHED.replace(
        '  "LogSettings": {',
        '  "emailsettings": {\n    "PushNotificationserver": "https://push.example.org"\n  },\n'
        '  "LogSettings": {',
    )
    assert result == expected


def test_a_null_section_before_the_object_is_left_alone() -> None:
    text = '{"emailsettings": null, "EmailSettings": {"SendPushNotifications": false}}'
    assert set_values(text, {SEND: True, SERVER: "x"}) == (
        '{"emailsettings": null,'
        ' "EmailSettings": {"SendPushNotifications": true, "PushNotificationServer": "x"}}'
    )


def test_a_non_ascii_spelling_is_shown_escaped_in_messages() -> None:
    """A look-alike letter (long s) must be visible in the message."""
    text = '{"EmailSettings": {}, "Email\u017fettings": []}'
    with pytest.raises(JsonEditError) as caught:
        set_values(text, {SERVER: "x"})
    assert str(caught.value) == (
        "cannot set EmailSettings.PushNotificationServer: EmailSettings"
        ' (written "Email\\u017fettings") is an array, not an object, at line 1 column 40'
    )


def test_an_equal_object_in_another_key_order_stays_while_other_keys_change() -> None:
    states = {"playbooks": {"Enable": False}, "com.mattermost.calls": {"Enable": True}}
    result = set_values(
        CONFIG, {("PluginSettings", "PluginStates"): states, ("LogSettings", "FileLevel"): "DEBUG"}
    )
    assert result == CONFIG.replace('"FileLevel": "INFO"', '"FileLevel": "DEBUG"')


@pytest.mark.parametrize(
    ("text", "newline"),
    [
        ('{\r\n  "a": {}\n}', "\r\n"),  # the first line ending decides
        ('{\n  "a": {}\r\n}', "\n"),
        ('{"b": 1,\r\n  "a": {}\n}', "\r\n"),
    ],
)
def test_the_first_line_ending_is_the_file_s(text: str, newline: str) -> None:
    result = set_values(text, {("a", "x"): 1})
    assert result == text.replace("{}", "{" + newline + '    "x": 1' + newline + "  }", 1)


INDENT_CASES = [
    # The root's first member is on the "{" line: the unit comes from the next container.
    (
        '{"x": 0,\n "y": 1,\n "a": {\n     "b": 1\n }\n}',
        ("a", "c"),
        '{"x": 0,\n "y": 1,\n "a": {\n     "b": 1,\n     "c": {\n         "d": 1\n'
        "     }\n }\n}",
    ),
    # ... or from an array.
    (
        '{"a": [\n   1\n ], "b": {\n "c": 0}}',
        ("b", "n"),
        '{"a": [\n   1\n ], "b": {\n "c": 0,\n "n": {\n    "d": 1\n }}}',
    ),
    # A child not deeper than its parent teaches nothing: the default, 2 spaces.
    ('{\n"a": {\n"b": 0\n}\n}', ("n",), '{\n"a": {\n"b": 0\n},\n"n": {\n  "d": 1\n}\n}'),
    # Tab-indented parent, space-indented child: not a unit either.
    (
        '{"x": 0,\n\t"a": {\n  "b": 1\n\t}\n}',
        ("a", "n"),
        '{"x": 0,\n\t"a": {\n  "b": 1,\n  "n": {\n    "d": 1\n  }\n\t}\n}',
    ),
]


@pytest.mark.parametrize(("text", "path", "expected"), INDENT_CASES)
def test_the_indent_unit_is_learnt_from_the_first_indented_child(
    text: str, path: tuple[str, ...], expected: str
) -> None:
    assert set_values(text, {path: {"d": 1}}) == expected


def test_compact_json_is_edited_in_place() -> None:
    text = json.dumps({"a": {"b": 1, "c": [1, {"d": 2}]}, "e": 3}, separators=(",", ":"))
    result = set_values(text, {("a", "b"): 5, ("a", "x"): True, ("e",): "f"})
    assert result == '{"a":{"b":5,"c":[1,{"d":2}], "x": true},"e":"f"}'


def test_a_one_line_object_in_a_multiline_file_stays_on_one_line() -> None:
    text = '{\n  "a": {"b": 1}\n}\n'
    assert set_values(text, {("a", "x"): {"y": [1]}}) == '{\n  "a": {"b": 1, "x": {"y": [1]}}\n}\n'
    assert set_values(text, {("a", "b"): {"y": [1]}}) == '{\n  "a": {"b": {"y": [1]}}\n}\n'


def test_equal_arrays_of_objects_in_another_key_order_stay_while_other_keys_change() -> None:
    entries = [
        {"Version": "1.0.0", "Id": "com.mattermost.calls"},
        {"Version": "2.0.0", "Id": "playbooks"},
    ]
    result = set_values(
        CONFIG,
        {("PluginSettings", "MarketplaceEntries"): entries, ("LogSettings", "FileLevel"): "DEBUG"},
    )
    assert result == CONFIG.replace('"FileLevel": "INFO"', '"FileLevel": "DEBUG"')


def test_an_empty_root_on_an_indented_second_line() -> None:
    assert set_values("\n  {\n  }\n", {("a",): 1}) == '\n  {\n    "a": 1\n  }\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"EmailSettings": {"PushNotificationServer": "a"},\n "emailsettings": null}',
            'cannot set EmailSettings.PushNotificationServer: EmailSettings (written'
            ' "emailsettings") is null at line 2 column 19, after an object of the same name at'
            " line 1 column 19: Go keeps that object if the field is a struct and drops it if"
            " it is a pointer; remove one of the two",
        ),
        (
            '{"EmailSettings": {},\n "EMAILSETTINGS": 5}',
            'cannot set EmailSettings.PushNotificationServer: EmailSettings (written'
            ' "EMAILSETTINGS") is a number, not an object, at line 2 column 19',
        ),
        (
            '{"EmailSettings": "", "emailsettings": {}}',
            "cannot set EmailSettings.PushNotificationServer: EmailSettings is a string,"
            " not an object, at line 1 column 19",
        ),
    ],
)
def test_sections_go_would_reject_or_read_two_ways_are_refused(text: str, message: str) -> None:
    with pytest.raises(JsonEditError) as caught:
        set_values(text, {SERVER: "x"})
    assert str(caught.value) == message
    with pytest.raises(JsonEditError) as read:
        effective_value(text, SERVER)
    assert str(read.value) == message.replace("cannot set", "cannot read")


def test_a_section_that_is_only_null_cannot_take_a_setting() -> None:
    text = '{"emailsettings": null,\n "EmailSettings": null}'
    with pytest.raises(JsonEditError) as caught:
        set_values(text, {SERVER: "x"})
    assert str(caught.value) == (
        "cannot set EmailSettings.PushNotificationServer: EmailSettings is null,"
        " not an object, at line 2 column 19"
    )
    assert effective_value(text, SERVER) is MISSING  # Go: the setting stays nil


@pytest.mark.parametrize(
    ("key", "name", "same"),
    [
        ("pushnotificationserver", "PushNotificationServer", True),
        ("PUSHNOTIFICATIONSERVER", "PushNotificationServer", True),
        ("\u017fend", "Send", True),  # LATIN SMALL LETTER LONG S
        ("\u017fEND", "send", True),
        ("S\u212aip", "Skip", True),  # KELVIN SIGN
        ("\u212a", "k", True),
        ("\u0131d", "Id", False),  # dotless i
        ("\u0130d", "id", False),  # dotted I
        ("Stra\u00dfe", "STRASSE", False),  # ß is not ss
        ("\u1e9e", "\u00df", True),  # capital sharp s and sharp s
        ("\u03c3\u03c2", "\u03a3\u03a3", True),  # sigma, final sigma
        ("caf\u00e9", "CAF\u00c9", True),
        ("push_server", "PushServer", False),
        ("PushServers", "PushServer", False),
        ("", "", True),
        ("\ud800", "\udc00", True),  # lone surrogates both decode to U+FFFD in Go
        ("\udfff", "\ufffd", True),
        ("\u1c90", "\u10d0", True),  # Georgian Mtavruli AN: its lower case is the smaller
    ],
)
def test_go_fold(key: str, name: str, same: bool) -> None:
    assert (go_fold(key) == go_fold(name)) is same


def test_go_fold_of_ascii_is_upper_case() -> None:
    assert go_fold("Push_Server-2.x") == "PUSH_SERVER-2.X"
    assert go_fold("\u017f\u212a\u00e9\ud800\u0131") == "SK\u00c9\ufffd\u0131"


def test_missing_is_a_named_sentinel() -> None:
    assert repr(MISSING) == str(MISSING) == "MISSING"
    assert MISSING is not None
    assert effective_value('{"EmailSettings": {"PushNotificationServer": null}}', SERVER) is (
        MISSING
    )


def test_effective_value_of_objects_arrays_and_deep_paths() -> None:
    assert effective_value(CONFIG, ("ServiceSettings", "TrustedProxyIPHeader")) == [
        "X-Forwarded-For",
        "X-Real-IP",
    ]
    assert effective_value(CONFIG, ("PluginSettings", "PluginStates", "playbooks", "Enable")) is (
        False
    )
    assert effective_value(CONFIG, ("LogSettings", "AdvancedLoggingJSON")) == {}
    assert effective_value(CONFIG, ("FeatureFlags",)) is MISSING
    assert effective_value(CONFIG, ("NoSuchSection", "Key")) is MISSING
    assert effective_value("\ufeff" + CONFIG, SEND) is False
    same = '{"A": {"b": 1}, "a": null, "A": {"b": 1}}'
    assert effective_value(same, ("A",)) == {"b": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"A": {"b": 1}, "a": {"c": 2}}',
            "cannot read A: several keys hold different objects, which Go merges field by"
            " field; ask for a field inside",
        ),
        (
            '{"A": {"b": 1}, "a": null}',
            "cannot read A: its last key is null, after an object: Go keeps the object if the"
            " field is a struct and drops it if it is a pointer",
        ),
    ],
)
def test_effective_value_refuses_to_merge_objects(text: str, message: str) -> None:
    with pytest.raises(JsonEditError) as caught:
        effective_value(text, ("A",))
    assert str(caught.value) == message


def test_fields_of_merged_objects_can_be_read() -> None:
    text = '{"A": {"b": 1}, "a": {"c": 2}}'
    assert (effective_value(text, ("A", "b")), effective_value(text, ("a", "C"))) == (1, 2)


def test_effective_value_of_a_parsed_mapping() -> None:
    config = parse_object(CONFIG)
    assert effective_value(config, SERVER) == ""
    assert effective_value(config, ("emailsettings", "sendpushnotifications")) is False
    assert effective_value({"EmailSettings": None}, SERVER) is MISSING
    assert effective_value({"EmailSettings": "x", "Other": {}}, ("Other", "a")) is MISSING
    with pytest.raises(JsonEditError, match="EmailSettings is a string, not an object"):
        effective_value({"EmailSettings": "x"}, SERVER)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"EmailSettings": {}, "emailsettings": {}},
            "cannot read EmailSettings.PushNotificationServer from a parsed mapping: the top"
            " level has the keys 'EmailSettings', 'emailsettings', which Go reads as one field;"
            " which one it keeps depends on their order in the text: pass the text",
        ),
        (
            {"EmailSettings": {"PushNotificationServer": "a", "pushnotificationserver": "b"}},
            "cannot read EmailSettings.PushNotificationServer from a parsed mapping:"
            " EmailSettings has the keys 'PushNotificationServer', 'pushnotificationserver',"
            " which Go reads as one field; which one it keeps depends on their order in the"
            " text: pass the text",
        ),
        (
            {"EmailSettings": {"PushNotificationServer": float("nan")}},
            "cannot read EmailSettings.PushNotificationServer: the mapping is not JSON:"
            " nan is not allowed in JSON",
        ),
        (
            {"EmailSettings": {}, 1: "x"},
            "cannot read EmailSettings.PushNotificationServer: the mapping is not JSON:"
            " object key 1 is not a string",
        ),
    ],
)
def test_effective_value_refuses_mappings_it_cannot_answer_for(
    mapping: dict[str, Any], message: str
) -> None:
    with pytest.raises(JsonEditError) as caught:
        effective_value(mapping, SERVER)
    assert str(caught.value) == message


def test_effective_value_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="expected JSON text or a mapping, got bytes"):
        effective_value(CONFIG.encode(), SERVER)  # type: ignore[arg-type]
    with pytest.raises(JsonEditError, match="a key path must be a non-empty tuple of str"):
        effective_value(CONFIG, ())
    with pytest.raises(JsonEditError, match="not valid JSON"):
        effective_value('{"a": }', SERVER)


def test_the_safety_net_catches_a_wrong_edit() -> None:
    """set_values checks its own result; give the check results a bug would produce."""
    before = '{"A": {"b": 1}, "a": {"B": 2}, "c": [1]}'
    values = {("A", "b"): 3}
    _check_edit(before, '{"A": {"b": 3}, "a": {"B": 3}, "c": [1]}', values)  # right: no error
    wrong = [
        '{"A": {"b": 3}, "a": {"B": 2}, "c": [1]}',  # one member missed
        '{"A": {"b": 3}, "a": {"B": 3}, "c": [2]}',  # something else changed
        '{"A": {"b": 3}, "a": {"B": 3}, "c": [1], "d": 1}',  # something added
        '{"A": {"b": 3}, "a": {"b": 3}, "c": [1]}',  # a key respelled
        '{"A": {"b": 3.0}, "a": {"B": 3}, "c": [1]}',  # another type
    ]
    for after in wrong:
        with pytest.raises(JsonEditError, match=r"^internal error: the edited text does not hold"):
            _check_edit(before, after, values)
    for broken in ['{"A": {"b": 3}', '{"A": NaN}']:
        with pytest.raises(JsonEditError, match=r"^internal error: the edited text is not valid"):
            _check_edit(before, broken, values)


def test_the_safety_net_models_insertions_everywhere() -> None:
    before = '{"A": {}, "a": {"x": {"y": 1}}}'
    _check_edit(before, '{"A": {"n": {"m": 1}}, "a": {"x": {"y": 1}, "n": {"m": 1}}}', {
        ("A", "n", "m"): 1,
    })  # fmt: skip
    _check_edit(before, '{"A": {}, "a": {"x": {"y": 1, "z": 2}}}', {("a", "X", "z"): 2})
    _check_edit(before, '{"A": {}, "a": {"x": {"y": 1}}}', {("a", "x"): {"y": 1}})


# --- Against Go itself (runs where `go` is installed: apt-get install golang-go) ------------

GO_DECODER = """
package main

import (
	"encoding/json"
	"io"
	"os"
)

// Shaped like Mattermost's model.Config: a struct-valued section, a pointer section, and
// pointer settings. json.RawMessage leaves take any JSON value (so no type errors there).
type Section struct {
	PushServer *json.RawMessage
	Skip       *json.RawMessage
}

type Config struct {
	EmailSettings Section
	Flags         *Section
}

func leaf(raw *json.RawMessage) any {
	if raw == nil {
		return nil
	}
	return string(*raw)
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	var documents []string
	if err := json.Unmarshal(input, &documents); err != nil {
		panic(err)
	}
	results := []map[string]any{}
	for _, document := range documents {
		var config Config
		err := json.Unmarshal([]byte(document), &config)
		fields := map[string]any{
			"EmailSettings.PushServer": leaf(config.EmailSettings.PushServer),
			"EmailSettings.Skip":       leaf(config.EmailSettings.Skip),
			"Flags.PushServer":         nil,
			"Flags.Skip":               nil,
		}
		if config.Flags != nil {
			fields["Flags.PushServer"] = leaf(config.Flags.PushServer)
			fields["Flags.Skip"] = leaf(config.Flags.Skip)
		}
		results = append(results, map[string]any{"error": err != nil, "fields": fields})
	}
	output, _ := json.Marshal(results)
	os.Stdout.Write(output)
}
"""

GO_PATHS = [
    ("EmailSettings", "PushServer"),
    ("EmailSettings", "Skip"),
    ("Flags", "PushServer"),
    ("Flags", "Skip"),
]


def go_decode(documents: list[str], workdir: Path) -> list[dict[str, Any]]:
    """Go's json.Unmarshal of each document into GO_DECODER's Config (skips without Go)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (apt-get install golang-go): not checked against Go")
    source = workdir / "decode.go"
    source.write_text(GO_DECODER)
    env = dict(os.environ)
    env.setdefault("GOCACHE", str(workdir / "gocache"))
    env.setdefault("GOPATH", str(workdir / "gopath"))
    env["GO111MODULE"] = "off"
    done = subprocess.run(
        [go, "run", str(source)],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def spellings(name: str, rng: random.Random) -> str:
    """``name`` with a random case per letter, sometimes long s for s, Kelvin sign for k."""
    out = []
    for char in name:
        roll = rng.random()
        if char in "sS" and roll < 0.15:
            out.append("\u017f")
        elif char in "kK" and roll < 0.3:
            out.append("\u212a")
        else:
            out.append(char.upper() if rng.random() < 0.5 else char.lower())
    return "".join(out)


def random_key(name: str, near_misses: list[str], rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return name
    if roll < 0.85:
        return spellings(name, rng)
    return rng.choice(near_misses)


def random_leaf(rng: random.Random) -> str:
    return rng.choice(['"a"', '"b"', "1", "2.5", "true", "false", "null", "[1]", '{"x": 1}'])


def random_section(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return "null"
    if roll < 0.13:
        return rng.choice(['"text"', "3", "[]"])
    near_misses = ["PushServe", "Skips", "Push_Server"]
    keys = [random_key(rng.choice(["PushServer", "Skip"]), near_misses, rng) for _ in range(3)]
    members = [f"{json.dumps(key)}: {random_leaf(rng)}" for key in keys[: rng.randint(0, 3)]]
    return "{" + ", ".join(members) + "}"


def random_document(rng: random.Random) -> str:
    near_misses = ["EmailSetting", "Flag", "Flags2"]
    keys = [random_key(rng.choice(["EmailSettings", "Flags"]), near_misses, rng) for _ in range(4)]
    members = [f"{json.dumps(key)}: {random_section(rng)}" for key in keys[: rng.randint(0, 4)]]
    return "{" + ", ".join(members) + "}"


def go_field(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    raw = result["fields"][".".join(path)]
    return MISSING if raw is None else json.loads(raw)


def test_against_go_reading_and_setting(tmp_path: Path) -> None:
    """Random documents full of fold-equal keys: effective_value says what Go decodes, and
    after set_values Go decodes the new value and every other field as before."""
    rng = random.Random(20240601)
    documents = [random_document(rng) for _ in range(200 if UNDER_MUTATION else 400)]
    edits: list[tuple[int, tuple[str, ...], str]] = []
    for index, document in enumerate(documents):
        for path in GO_PATHS:
            with contextlib.suppress(JsonEditError):
                edits.append((index, path, set_values(document, {path: "new"})))
    decoded = go_decode(documents + [edited for _, _, edited in edits], tmp_path)
    before, after = decoded[: len(documents)], decoded[len(documents) :]

    compared = refused = 0
    for document, go in zip(documents, before, strict=True):
        for path in GO_PATHS:
            try:
                ours = effective_value(document, path)
            except JsonEditError as error:
                refused += 1
                assert go["error"] or re.search("after an object|different objects", str(error))
                continue
            if not go["error"]:
                compared += 1
                expected = go_field(go, path)
                assert same_json(ours, expected), (document, path, ours, expected)
    assert compared > 2 * len(documents) and refused > 20  # the corpus exercises both

    for (index, path, edited), go in zip(edits, after, strict=True):
        if before[index]["error"]:
            continue
        assert not go["error"], edited
        assert go_field(go, path) == "new", (documents[index], edited)
        for other in GO_PATHS:
            if other != path:
                assert same_json(go_field(go, other), go_field(before[index], other)), edited
    assert len(edits) > 2.5 * len(documents)


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


def fold(key: str) -> str:
    """Go's case folding for the keys this test generates (the test's own copy of the rule):
    ASCII letters to upper case, long s to S, the Kelvin sign to K, nothing else."""
    return "".join(
        {"\u017f": "S", "\u212a": "K"}.get(char, char.upper() if char < "\x80" else char)
        for char in key
    )


def model(obj: dict[str, Any], updates: dict[tuple[str, ...], Any]) -> dict[str, Any] | None:
    """``obj`` with ``updates`` applied the way set_values promises, or None for an error.

    Each key of a path stands for every key that folds to it (Go's struct field matching):
    every such member is set, and a missing one is added to every object that could hold it.
    """
    obj = copy.deepcopy(obj)
    for path, value in updates.items():
        parents = [obj]
        for depth, key in enumerate(path[:-1]):
            found = [p[name] for p in parents for name in p if fold(name) == fold(key)]
            objects = []
            for item in found:
                if isinstance(item, dict):
                    objects.append(item)
                elif item is not None or objects:
                    return None  # not an object, or null after an object
            if found and not objects:
                return None  # only nulls
            if not objects:
                for parent in parents:
                    parent[key] = copy.deepcopy(nest(path[depth + 1 :], value))
                break
            parents = objects
        else:
            members = [(p, name) for p in parents for name in p if fold(name) == fold(path[-1])]
            for parent, name in members:
                if not same_json(parent[name], value):
                    parent[name] = copy.deepcopy(value)
            if not members:
                for parent in parents:
                    parent[path[-1]] = copy.deepcopy(value)
    return obj


def nest(keys: tuple[str, ...], value: Any) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


def repeatable_under_mutation() -> dict[str, Any]:
    """Hypothesis settings for scripts/mutate: the same 50 examples on every run, no shrinking
    and no example database, so a mutant's verdict is repeatable and comes fast."""
    if not UNDER_MUTATION:
        return {}
    from hypothesis import Phase

    return {
        "derandomize": True,
        "database": None,
        "phases": [Phase.explicit, Phase.generate],
        "max_examples": 50,
    }


def test_property_result_is_what_json_dumps_would_write() -> None:
    """Random objects, as json.dumps writes them, with random key paths set.

    For text json.dumps wrote, set_values must give exactly what json.dumps writes for the
    updated object: new keys go last, and the layout (indent, CRLF, BOM, final newline) is kept.
    """
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    # Few letters, in both cases, and the two non-ASCII letters Go folds onto ASCII: keys that
    # Go reads as the same field are frequent.
    keys = st.text(alphabet="aAbBkKsS_\u017f\u212a\u0131\u00e9", max_size=3)
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

    @settings(**{"max_examples": 100, "deadline": None, **repeatable_under_mutation()})
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
            with pytest.raises(JsonEditError, match=r"^cannot set .* is null|not an object"):
                set_values(text, updates)
            return
        result = set_values(text, updates)
        assert same_json(parse_object(result), expected)
        assert result == layout(expected)
        last_path, last_value = list(updates.items())[-1]
        read = effective_value(result, last_path)
        assert read is MISSING if last_value is None else same_json(read, last_value)
        if not any(a != b and a == b[: len(a)] for a in updates for b in updates):
            assert set_values(result, updates) is result  # idempotent unless paths nest

    check()
