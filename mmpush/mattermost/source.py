"""Where a Mattermost server's configuration lives, found on its host as the server finds it.

    lines = run_on_host(config_source_command("mattermost"))   # as root, e.g. a pyinfra fact
    source = parse_config_source(lines)
    source.kind        # "file", "database" or "unknown"
    source.path        # "/opt/mattermost/config/config.json" (file)
    source.identity    # DsnIdentity("postgres", "db1", "5432", "mattermost") (database)
    source.socket      # "/var/tmp/mattermost_local.socket" when that local-mode socket exists

The server decides once, at start (``server/cmd/mattermost/commands/utils.go`` ``getConfigDSN``):
the ``--config``/``-c`` flag, else ``MM_CONFIG`` from its environment (names upper-cased first:
``config/environment.go`` ``GetEnvironment``), else ``config.json``. A value starting with
``postgres://``, ``postgresql://`` or ``mysql://`` (case-sensitive, ``config/utils.go``
``IsDatabaseDSN``) is a database store; anything else is a file, a relative one searched for
as ``config/file.go`` ``resolveConfigFilePath`` does (``channels/config/X``, ``config/X``, ``X``
near the working directory and the binary, else ``X`` in the nearest ``config`` directory).

The command reads the running process (``/proc/<MainPID>``: command line, environment, working
directory, binary) when the unit runs, else the unit (``ExecStart``, ``WorkingDirectory``, the
service manager's environment, ``Environment=``, ``EnvironmentFile=``, in systemd's order).
pyinfra prints a fact's output with ``-vvv``: the command prints only what is listed in
:func:`config_source_command`, never a DSN, user name, password or query parameter. The DSN is
parsed on the host; it is never put on a command line (only in the parsing ``awk``'s
environment).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple
from urllib.parse import unquote

from pyinfra.api import FactBase

DEFAULT_LOCAL_SOCKET = "/var/tmp/mattermost_local.socket"  # ServiceSettings default
SOCKET_ENV = "MM_SERVICESETTINGS_LOCALMODESOCKETLOCATION"
DEFAULT_PORTS = {"postgres": "5432", "mysql": "3306"}
SourceKind = Literal["file", "database", "unknown"]


class DsnIdentity(NamedTuple):
    """What names a configuration database, without credentials: two servers with the same
    identity share one configuration (unless the host is local to each machine)."""

    scheme: str  # "postgres" (also for postgresql://) or "mysql"
    host: str  # a name, an IP, or a unix socket path/directory
    port: str
    dbname: str

    @property
    def key(self) -> str:
        """``postgres://db1:5432/mattermost`` (never credentials or parameters)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.dbname}"

    @property
    def is_local(self) -> bool:
        """Whether the host means "this machine" (loopback or a unix socket), so the same DSN
        on two machines names two different databases."""
        host = self.host.lower()
        return (
            host in ("localhost", "::1", "0:0:0:0:0:0:0:1")
            or host.startswith("127.")
            or host.startswith("/")
            or host.endswith(".localhost")
        )


@dataclass(frozen=True)
class ConfigSource:
    """Where one server's configuration lives, as :func:`parse_config_source` read it."""

    kind: SourceKind
    path: str | None = None  # file: absolute path
    identity: DsnIdentity | None = None  # database
    socket: str | None = None  # the local-mode socket, when it exists
    origin: str = ""  # where the value came from ("MM_CONFIG in the unit's Environment=", ...)
    reason: str = ""  # unknown: why
    notes: tuple[str, ...] = field(default=())  # e.g. an EnvironmentFile line systemd ignores

    def describe(self) -> str:
        """``the file /opt/mattermost/config/config.json`` / ``the database postgres://db1:5432/
        mattermost`` / ``an unknown source (why)``, for messages."""
        if self.kind == "file":
            return f"the file {self.path}"
        if self.kind == "database" and self.identity is not None:
            return f"the database {self.identity.key}"
        return f"an unknown source ({self.reason or 'not detected'})"


# --------------------------------------------------------------------------------------------
# The command run on the Mattermost host
# --------------------------------------------------------------------------------------------

# The --config / -c value in an argument list, one argument per line, argv[0] first (pflag:
# "--config X", "--config=X", "-c X", "-c=X", "-cX"; the last one wins; "--" ends flags).
_FLAG_AWK = r"""
NR == 1 { next }
$0 == "--" { exit }
$0 == "--config" || $0 == "-c" { if ((getline nxt) > 0) v = nxt; next }
substr($0, 1, 9) == "--config=" { v = substr($0, 10); next }
substr($0, 1, 3) == "-c=" { v = substr($0, 4); next }
substr($0, 1, 2) == "-c" && length($0) > 2 { v = substr($0, 3); next }
END { printf "%s", v }
"""

# The value of the last NAME=value line whose name, upper-cased (as Go's GetEnvironment does),
# is ``name``; exit 1 when there is none (set-but-empty counts as set).
_ENV_AWK = r"""
{
  i = index($0, "=")
  if (i > 1 && toupper(substr($0, 1, i - 1)) == name) { v = substr($0, i + 1); f = 1 }
}
END { if (!f) exit 1; printf "%s", v }
"""

# systemctl show -p Environment --value: space-separated assignments, double-quoted when
# they hold spaces (backslash escapes inside quotes). One assignment per output line.
_UNIT_ENV_AWK = r"""
function emit() { if (intok) print tok; tok = ""; intok = 0 }
{
  n = length($0); inq = 0
  for (i = 1; i <= n; i++) {
    c = substr($0, i, 1)
    if (inq) {
      if (c == "\\" && i < n) { i++; tok = tok substr($0, i, 1) }
      else if (c == "\"") inq = 0
      else tok = tok c
    }
    else if (c == "\"") { inq = 1; intok = 1 }
    else if (c == " " || c == "\t") emit()
    else { tok = tok c; intok = 1 }
  }
  emit()
}
"""

# An EnvironmentFile as systemd reads it (src/basic/env-file.c): comments (# ;), KEY=value with
# single quotes, double quotes (backslash escapes), backslash escapes, trailing blanks dropped.
# A key that is not a valid name -- "export MM_CONFIG" -- is ignored by systemd
# (env_name_is_valid): such a line is reported as "#export" instead.
_ENV_FILE_AWK = r"""
{
  line = $0; sub(/^[ \t]+/, "", line)
  if (line == "" || substr(line, 1, 1) == "#" || substr(line, 1, 1) == ";") next
  i = index(line, "="); if (i == 0) next
  key = substr(line, 1, i - 1); sub(/[ \t]+$/, "", key)
  if (key !~ /^[A-Za-z_][A-Za-z0-9_]*$/) {
    if (toupper(key) ~ /^EXPORT[ \t]+MM_CONFIG$/) print "#export"
    next
  }
  rest = substr(line, i + 1); value = ""; state = "pre"; n = length(rest)
  for (j = 1; j <= n; j++) {
    c = substr(rest, j, 1)
    if (state == "pre") {
      if (c == "'") state = "sq"
      else if (c == "\"") state = "dq"
      else if (c == "\\") { j++; value = value substr(rest, j, 1); state = "val" }
      else if (c != " " && c != "\t") { value = value c; state = "val" }
    } else if (state == "val") {
      if (c == "\\") { j++; value = value substr(rest, j, 1) } else value = value c
    } else if (state == "sq") {
      if (c == "'") state = "pre"; else value = value c
    } else {
      if (c == "\"") state = "pre"
      else if (c == "\\") {
        j++; d = substr(rest, j, 1)
        if (index("\"\\`$", d)) value = value d; else value = value "\\" d
      }
      else value = value c
    }
  }
  if (state == "val") sub(/[ \t]+$/, "", value)
  print key "=" value
}
"""

# systemctl show-environment: NAME=value, values with special characters as $'...'.
_MANAGER_ENV_AWK = r"""
{ i = index($0, "="); v = substr($0, i + 1)
  if (substr(v, 1, 2) == "$'" && substr(v, length(v), 1) == "'") v = substr(v, 3, length(v) - 3)
  print substr($0, 1, i) v }
"""

# The non-secret identity of a configuration DSN (read from the environment variable
# MMPUSH_DSN, never from the command line): "database <scheme> <host> <port> <dbname>", each
# percent-encoded ("%20" for a space), "-" when empty.
# postgres: lib/pq ParseURL: net/url (fragment, then query cut off; host after the last "@");
# "host"/"port"/"dbname" query parameters are added to the URL's and the settings are sorted
# before the last one wins, so of two values the greater string wins.
# mysql: go-sql-driver ParseDSN: user:pw@net(addr)/dbname?params, the last "/" splits.
_DSN_AWK = r"""
function lastidx(s, ch,   i) {
  for (i = length(s); i > 0; i--) if (substr(s, i, 1) == ch) return i
  return 0
}
function hexval(s,   i, v, c) {
  v = 0
  for (i = 1; i <= 2; i++) {
    c = index("0123456789abcdef", tolower(substr(s, i, 1)))
    if (!c) return -1
    v = v * 16 + c - 1
  }
  return v
}
function decode(s, plus,   r, i, c, h) {
  r = ""
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    h = (c == "%" && i + 2 <= length(s)) ? hexval(substr(s, i + 1, 2)) : -1
    if (h > 0) { r = r sprintf("%c", h); i += 2 }
    else if (c == "+" && plus) r = r " "
    else r = r c
  }
  return r
}
function qget(q, key,   n, parts, i, e) {
  n = split(q, parts, "&")
  for (i = 1; i <= n; i++) {
    e = index(parts[i], "=")
    if (e && decode(substr(parts[i], 1, e - 1), 1) == key) return decode(substr(parts[i], e + 1), 1)
  }
  return ""
}
function pick(a, b) { if (a == "") return b; if (b == "") return a; return (a > b) ? a : b }
function enc(s) {
  if (s == "-") return "%2D"
  gsub(/%/, "%25", s); gsub(/ /, "%20", s); gsub(/\t/, "%09", s)
  return (s == "") ? "-" : s
}
function postgres(rest,   f, q, auth, path, a, h, host, port, e, r, c) {
  f = index(rest, "#"); if (f) rest = substr(rest, 1, f - 1)
  q = ""; f = index(rest, "?"); if (f) { q = substr(rest, f + 1); rest = substr(rest, 1, f - 1) }
  auth = rest; path = ""
  f = index(rest, "/"); if (f) { auth = substr(rest, 1, f - 1); path = substr(rest, f + 1) }
  a = lastidx(auth, "@"); h = a ? substr(auth, a + 1) : auth
  host = h; port = ""
  if (substr(h, 1, 1) == "[") {
    e = index(h, "]")
    if (e) {
      host = substr(h, 2, e - 2); r = substr(h, e + 1)
      if (substr(r, 1, 1) == ":") port = substr(r, 2)
    }
  } else { c = lastidx(h, ":"); if (c) { host = substr(h, 1, c - 1); port = substr(h, c + 1) } }
  host = pick(decode(host, 0), qget(q, "host"))
  port = pick(port, qget(q, "port"))
  path = pick(decode(path, 0), qget(q, "dbname"))
  print "database postgres " enc(host) " " enc(port) " " enc(path)
}
function mysql(rest,   p, pre, post, f, db, a, na, o, net, addr, host, port, c) {
  p = lastidx(rest, "/")
  if (!p) { print "unknown the mysql:// configuration DSN has no /database part"; return }
  pre = substr(rest, 1, p - 1); post = substr(rest, p + 1)
  f = index(post, "?"); db = f ? substr(post, 1, f - 1) : post
  a = lastidx(pre, "@"); na = a ? substr(pre, a + 1) : pre
  o = index(na, "(")
  net = na; addr = ""
  if (o) { net = substr(na, 1, o - 1); addr = substr(na, o + 1); sub(/\)$/, "", addr) }
  if (net == "") net = "tcp"
  if (net == "unix") { host = (addr == "") ? "/tmp/mysql.sock" : addr; port = "" }
  else {
    if (addr == "") addr = "127.0.0.1:3306"
    host = addr; port = "3306"
    if (substr(addr, 1, 1) == "[") {
      c = index(addr, "]"); host = substr(addr, 2, c - 2)
      if (substr(addr, c + 1, 1) == ":") port = substr(addr, c + 2)
    } else {
      c = lastidx(addr, ":")
      if (c) { host = substr(addr, 1, c - 1); port = substr(addr, c + 1) }
    }
  }
  print "database mysql " enc(decode(host, 0)) " " enc(port) " " enc(decode(db, 0))
}
BEGIN {
  d = ENVIRON["MMPUSH_DSN"]; i = index(d, "://")
  scheme = substr(d, 1, i - 1); rest = substr(d, i + 3)
  if (scheme == "mysql") mysql(rest); else postgres(rest)
}
"""

_SCRIPT = r"""
unit=__UNIT__
sock=__SOCKET__
LC_ALL=C; export LC_ALL
FLAG_AWK=__FLAG_AWK__
ENV_AWK=__ENV_AWK__
UNIT_ENV_AWK=__UNIT_ENV_AWK__
ENV_FILE_AWK=__ENV_FILE_AWK__
MANAGER_ENV_AWK=__MANAGER_ENV_AWK__
DSN_AWK=__DSN_AWK__
running=''; wd=''; exe=''; flag=''

show() { systemctl show "$unit" -p "$1" --value 2>/dev/null; }

# env_lookup NAME: sets lk_found, lk_value, lk_from as the server's environment would hold NAME
env_lookup() {
  lk_found=''; lk_value=''; lk_from=''
  if [ -n "$running" ]; then
    if v=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | awk -v name="$1" "$ENV_AWK"); then
      lk_found=1; lk_value=$v; lk_from="$1 in the running process's environment"
    fi
    return 0
  fi
  if v=$(systemctl show-environment 2>/dev/null | awk "$MANAGER_ENV_AWK" \
    | awk -v name="$1" "$ENV_AWK"); then
    lk_found=1; lk_value=$v
    lk_from="$1 in the service manager's environment (systemctl set-environment)"
  fi
  if v=$(show Environment | awk "$UNIT_ENV_AWK" | awk -v name="$1" "$ENV_AWK"); then
    lk_found=1; lk_value=$v; lk_from="$1 in the unit's Environment="
  fi
  envfiles=$(show EnvironmentFiles | sed 's/ (ignore_errors=[a-z]*)$//')
  while IFS= read -r f; do
    f=${f#-}
    [ -n "$f" ] && [ -r "$f" ] || continue
    if v=$(awk "$ENV_FILE_AWK" "$f" 2>/dev/null | awk -v name="$1" "$ENV_AWK"); then
      lk_found=1; lk_value=$v; lk_from="$1 in EnvironmentFile $f"
    fi
    if [ "$1" = MM_CONFIG ] && awk "$ENV_FILE_AWK" "$f" 2>/dev/null | grep -qx '#export'; then
      echo "note EnvironmentFile $f has an 'export MM_CONFIG=' line, which systemd ignores"
    fi
  done <<EOF
$envfiles
EOF
  return 0
}

# find_up REL TEST DEPTH: the first REL near the working directory, then near the binary
# (utils/fileutils.go findPath); TEST f = exists and is not a directory, e = exists,
# d = a directory; DEPTH all = . .. ../.. ../../.. ../../../.., here = . only
find_up() {
  if [ "$3" = here ]; then ups=.; else ups='. .. ../.. ../../.. ../../../..'; fi
  for base in "$wd" "$bindir"; do
    [ -n "$base" ] || continue
    for up in $ups; do
      c=$(realpath -s -m -- "$base/$up/$1" 2>/dev/null) || continue
      case $2 in
        f) if [ -e "$c" ] && [ ! -d "$c" ]; then printf '%s\n' "$c"; return 0; fi ;;
        e) if [ -e "$c" ]; then printf '%s\n' "$c"; return 0; fi ;;
        d) if [ -d "$c" ]; then printf '%s\n' "$c"; return 0; fi ;;
      esac
    done
  done
  return 1
}

main() {
  load=$(show LoadState)
  if [ -z "$load" ] || [ "$load" = not-found ]; then
    echo "unknown systemd has no unit $unit"
    return 0
  fi
  pid=$(show MainPID)
  if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -r "/proc/$pid/cmdline" ]; then
    running=1; where="the running process"
    flag=$(tr '\0' '\n' < "/proc/$pid/cmdline" | awk "$FLAG_AWK")
    wd=$(readlink "/proc/$pid/cwd" 2>/dev/null)
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null); exe=${exe% (deleted)}
  else
    where="the unit's ExecStart"
    start=$(show ExecStart)
    flag=$(printf '%s\n' "$start" | sed -n 's/.*argv\[\]=\([^;]*\) ;.*/\1/p' | head -n 1 \
      | tr ' ' '\n' | awk "$FLAG_AWK")
    path=$(printf '%s\n' "$start" | sed -n 's/.*path=\([^ ;]*\) ;.*/\1/p' | head -n 1)
    [ -n "$path" ] && exe=$(readlink -f -- "$path" 2>/dev/null)
    wd=$(show WorkingDirectory); wd=${wd#!}; wd=${wd#-}
    if [ "$wd" = '~' ]; then
      user=$(show User)
      wd=$(getent passwd "${user:-root}" 2>/dev/null | cut -d: -f6)
    fi
    [ -n "$wd" ] || wd=/
  fi
  bindir=''
  [ -n "$exe" ] && bindir=$(dirname -- "$exe")
  env_lookup MM_CONFIG
  if [ -n "$flag" ]; then
    value=$flag; from="--config in $where"
  elif [ -n "$lk_found" ] && [ -n "$lk_value" ]; then
    value=$lk_value; from=$lk_from
  elif [ -n "$lk_found" ]; then
    value=config.json; from="the default config.json ($lk_from is empty)"
  else
    value=config.json; from="the default config.json (no --config, no MM_CONFIG)"
  fi
  echo "from $from"
  case $value in
    postgres://*|postgresql://*|mysql://*)
      MMPUSH_DSN=$value awk "$DSN_AWK" </dev/null
      return 0 ;;
  esac
  case $value in
    *://*)
      echo "unknown the configuration value looks like a DSN but does not start with" \
        "postgres://, postgresql:// or mysql:// (lower case), so the server takes it for a" \
        "file name"
      return 0 ;;
  esac
  if [ -z "$running" ] && [ "$value" != "${value#*\$}" ]; then
    echo "unknown the configuration value uses a variable that systemd expands at start"
    return 0
  fi
  case $value in
    /*) printf 'file %s\n' "$value"; return 0 ;;
  esac
  if p=$(find_up "channels/config/$value" f all) || p=$(find_up "config/$value" f all) \
    || p=$(find_up "$value" e here); then
    printf 'file %s\n' "$p"
  elif d=$(find_up config d all); then
    printf 'file %s\n' "$(realpath -s -m -- "$d/$value")"
  else
    printf 'unknown no %s and no config directory near %s or %s\n' "$value" "$wd" "${bindir:-?}"
  fi
}

main
env_lookup __SOCKET_ENV__
for s in "$sock" "$lk_value"; do
  if [ -n "$s" ] && [ -S "$s" ]; then printf 'socket %s\n' "$s"; break; fi
done
exit 0
"""


def config_source_command(unit: str, socket_path: str = DEFAULT_LOCAL_SOCKET) -> str:
    """A POSIX shell command, run as root on the Mattermost host, that prints where the
    server of systemd unit ``unit`` keeps its configuration, one fact per line:

    - ``from <where the value came from>`` (e.g. ``MM_CONFIG in the unit's Environment=``)
    - ``file <absolute path>``, or ``database <scheme> <host> <port> <dbname>``
      (percent-encoded, ``-`` for empty), or ``unknown <reason>``
    - ``socket <path>`` when ``socket_path`` (or ``MM_SERVICESETTINGS_LOCALMODESOCKETLOCATION``
      in the server's environment) is a unix socket: local mode is on
    - ``note <text>`` for things an admin should know (an ``export MM_CONFIG=`` line that
      systemd ignores)

    Never a user name, password or query parameter; it always exits 0.

        config_source_command("mattermost")
    """
    replacements = {
        "__UNIT__": shlex.quote(unit),
        "__SOCKET__": shlex.quote(socket_path),
        "__SOCKET_ENV__": SOCKET_ENV,
        "__FLAG_AWK__": shlex.quote(_FLAG_AWK),
        "__ENV_AWK__": shlex.quote(_ENV_AWK),
        "__UNIT_ENV_AWK__": shlex.quote(_UNIT_ENV_AWK),
        "__ENV_FILE_AWK__": shlex.quote(_ENV_FILE_AWK),
        "__MANAGER_ENV_AWK__": shlex.quote(_MANAGER_ENV_AWK),
        "__DSN_AWK__": shlex.quote(_DSN_AWK),
    }
    script = _SCRIPT
    for marker, value in replacements.items():
        script = script.replace(marker, value)
    return script.strip() + "\n"


# --------------------------------------------------------------------------------------------
# Reading its output
# --------------------------------------------------------------------------------------------


def parse_config_source(lines: Iterable[str]) -> ConfigSource:
    """The :class:`ConfigSource` that :func:`config_source_command` printed (pure).

    parse_config_source(["from --config in the unit's ExecStart",
                         "database postgresql db1 - mattermost"]).identity
    # DsnIdentity(scheme="postgres", host="db1", port="5432", dbname="mattermost")
    """
    kind: SourceKind = "unknown"
    path: str | None = None
    identity: DsnIdentity | None = None
    socket: str | None = None
    origin = ""
    reason = "the detection printed nothing"
    notes: list[str] = []
    for raw in lines:
        word, _, rest = raw.strip().partition(" ")
        if word == "file" and rest:
            kind, path, identity = "file", rest, None
        elif word == "database":
            parsed = _identity(rest)
            if parsed is None:
                kind, reason = "unknown", "the database DSN could not be read"
            else:
                kind, identity, path = "database", parsed, None
        elif word == "unknown":
            kind, reason = "unknown", rest or "not detected"
        elif word == "socket" and rest:
            socket = rest
        elif word == "from":
            origin = rest
        elif word == "note" and rest:
            notes.append(rest)
    return ConfigSource(
        kind=kind,
        path=path,
        identity=identity,
        socket=socket,
        origin=origin,
        reason="" if kind != "unknown" else reason,
        notes=tuple(notes),
    )


def _identity(text: str) -> DsnIdentity | None:
    fields = text.split(" ")
    if len(fields) != 4:
        return None
    scheme, host, port, dbname = (unquote(f) if f != "-" else "" for f in fields)
    scheme = "postgres" if scheme == "postgresql" else scheme
    if scheme not in DEFAULT_PORTS:
        return None
    return DsnIdentity(
        scheme=scheme,
        host=(host or "localhost").lower() if not host.startswith("/") else host,
        port=port or DEFAULT_PORTS[scheme],
        dbname=dbname,
    )


class MattermostConfigSource(FactBase[ConfigSource]):
    """pyinfra fact: where the server of a unit keeps its configuration (run it as root: it
    reads /proc/<pid>/environ and EnvironmentFiles).

        source = host.get_fact(MattermostConfigSource, unit="mattermost", _sudo=True)
    """

    def command(self, unit: str, socket_path: str = DEFAULT_LOCAL_SOCKET) -> str:
        return config_source_command(unit, socket_path)

    def process(self, output: list[str]) -> ConfigSource:
        return parse_config_source(output)


# --------------------------------------------------------------------------------------------
# Checking the source against the settings
# --------------------------------------------------------------------------------------------


def source_problem(
    host_name: str, setting: str, source: ConfigSource, has_token: bool
) -> str | None:
    """Why the deploy cannot change this host's push settings safely, as a sentence naming the
    host and the setting; None when it can. ``setting`` is ``mattermost_config_source``
    (``auto``, ``file``, ``database``); ``has_token``: ``mattermost_admin_token`` (and
    ``mattermost_api_url``) are set.

        source_problem("mm2", "auto", database_source_without_socket, has_token=False)
        # "host mm2: its Mattermost configuration is in the database ... "
    """
    where = f" ({source.origin})" if source.origin else ""
    if setting not in ("auto", "file", "database"):
        return (
            f"host {host_name}: mattermost_config_source = {setting!r}: use 'auto', 'file' or "
            "'database'; nothing was changed on any host"
        )
    if setting == "auto" and source.kind == "unknown":
        return (
            f"host {host_name}: cannot tell where its Mattermost configuration lives "
            f"({source.reason}); set mattermost_config_source to 'file' or 'database'; nothing "
            "was changed on any host"
        )
    if setting == "file" and source.kind == "database":
        return (
            f"host {host_name}: mattermost_config_source = 'file', but the server reads "
            f"{source.describe()}{where}: editing a file would change nothing; set "
            "mattermost_config_source to 'database' or 'auto'; nothing was changed on any host"
        )
    if setting == "database" and source.kind == "file":
        return (
            f"host {host_name}: mattermost_config_source = 'database', but the server reads "
            f"{source.describe()}{where}; set mattermost_config_source to 'file' or 'auto'; "
            "nothing was changed on any host"
        )
    uses_database = source.kind == "database" or setting == "database"
    if uses_database and source.socket is None and not has_token:
        return (
            f"host {host_name}: its Mattermost configuration is in {source.describe()}{where}, "
            "which only the config API may change, and there is no way to reach that API: "
            f"the local-mode socket {DEFAULT_LOCAL_SOCKET} does not exist "
            "(ServiceSettings.EnableLocalMode is off) and mattermost_admin_token is not set; "
            "turn local mode on, or set mattermost_api_url and mattermost_admin_token; nothing "
            "was changed on any host"
        )
    return None
