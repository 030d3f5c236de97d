"""Host-side file transactions as bash scripts: every step checked, nothing half-written.

The custom operations (``mmpush.operations``) upload new content first, then run one of these
scripts on the host. Each script runs under ``set -euo pipefail`` and follows one rule: a
file is saved, the copy is checked (size and sha256, or the link target for a symlink), and
only then is the file replaced, atomically (a temp file in the same directory, renamed over
it). A rollback restores only verified copies. When anything fails, the script says what
state the host is in, naming the files.

    script = replace_file_script(FileChange("/etc/x.json", "/etc/.x.json.mmpush-new", sha))
    host.run_shell_command(bash(script))

The scripts are pure text built from their arguments, so unit tests run them for real against
files in a temporary directory, with fake ``nginx`` and ``systemctl`` commands.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

#: Where new files are uploaded before a transaction uses them (root only, 0700).
STAGING_DIR = "/var/lib/mmpush/staging"
#: Where verified copies of replaced files are kept while a transaction runs; a copy stays
#: there only when a rollback could not put it back (the message names it).
BACKUP_DIR = "/var/lib/mmpush/backup"


def q(value: str) -> str:
    """Shell-quote one word."""
    return shlex.quote(value)


def bash(script: str) -> str:
    """The command that runs ``script`` with bash (pyinfra runs commands with ``sh -c``, and
    dash has no ``pipefail``)."""
    return f"bash -c {q(script)}"


def temp_beside(path: str, suffix: str = "mmpush-new") -> str:
    """A hidden temporary name in the same directory as ``path`` (same filesystem, so a
    rename over ``path`` is atomic; hidden, so no ``*.conf`` include picks it up)."""
    target = PurePosixPath(path)
    return str(target.with_name(f".{target.name}.{suffix}"))


#: Shell functions every transaction script starts with.
PRELUDE = r"""set -euo pipefail
umask 077
say() { printf 'mmpush: %s\n' "$*" >&2; }
sha() { sha256sum -- "$1" | cut -d' ' -f1; }
# same A B: B is an exact copy of A (the same link target for a symlink; size and sha256 else)
same() {
  if [ -L "$1" ]; then
    [ -L "$2" ] && [ "$(readlink -- "$1")" = "$(readlink -- "$2")" ]
  else
    [ -f "$1" ] && [ -f "$2" ] && [ ! -L "$2" ] \
      && [ "$(stat -c %s -- "$1")" = "$(stat -c %s -- "$2")" ] \
      && [ "$(sha "$1")" = "$(sha "$2")" ]
  fi
}
exists() { [ -e "$1" ] || [ -L "$1" ]; }
# copy_checked SRC DEST: copy SRC (file or symlink, metadata kept) and check the copy
copy_checked() {
  rm -f -- "$2"
  if cp -a -- "$1" "$2" 2>/dev/null && same "$1" "$2"; then return 0; fi
  rm -f -- "$2"
  return 1
}
# place_checked NEW DEST SHA MODE: put a copy of NEW at DEST atomically, after checking the
# copy has sha256 SHA (a full disk truncates silently; this catches it)
place_checked() {
  local tmp
  tmp="$(dirname -- "$2")/.$(basename -- "$2").mmpush-new"
  rm -f -- "$tmp"
  if cp -- "$1" "$tmp" 2>/dev/null && chmod "$4" -- "$tmp" && [ "$(sha "$tmp")" = "$3" ] \
      && mv -fT -- "$tmp" "$2"; then
    return 0
  fi
  rm -f -- "$tmp"
  return 1
}
# restore_checked COPY DEST: put the verified COPY back at DEST (atomically), or remove DEST
# when there was nothing (COPY absent)
restore_checked() {
  local tmp
  if ! exists "$1"; then rm -f -- "$2"; return 0; fi
  tmp="$(dirname -- "$2")/.$(basename -- "$2").mmpush-restore"
  rm -f -- "$tmp"
  if cp -a -- "$1" "$tmp" 2>/dev/null && same "$1" "$tmp" && mv -fT -- "$tmp" "$2" \
      && same "$1" "$2"; then
    return 0
  fi
  rm -f -- "$tmp"
  return 1
}
"""


@dataclass(frozen=True)
class FileChange:
    """One file a transaction writes or removes.

    ``staged``: the uploaded new content (None: remove ``path``); ``sha256`` of that content;
    ``mode``: the new file's mode (``644``)."""

    path: str
    staged: str | None
    sha256: str | None = None
    mode: str = "644"


def _array(name: str, values: Sequence[str]) -> str:
    return f"{name}=({' '.join(q(v) for v in values)})"


def replace_file_script(
    change: FileChange,
    *,
    expected_sha256: str | None = None,
    backup_suffix: str | None = None,
    owner: str | None = None,
    follow_symlink: bool = False,
) -> str:
    """Replace one file with its staged new content, atomically.

    - ``expected_sha256``: the content the file must still have (what the deploy read while
      preparing); if someone changed it meanwhile, nothing is changed.
    - ``backup_suffix``: keep the old file as ``<path><suffix>`` (checked before replacing).
    - ``owner``: ``user:group`` for the new file; None copies the old file's owner and mode
      (then ``change.mode`` applies only to a file that did not exist).
    - ``follow_symlink``: when ``path`` is a symlink, edit its target in place (the link
      stays); otherwise a symlink at ``path`` is replaced by the file.

    The staged file is removed on every path; on failure the message says nothing changed.
    """
    assert change.staged is not None and change.sha256 is not None
    lines = [
        PRELUDE,
        f"path={q(change.path)}",
        f"staged={q(change.staged)}",
        "tmp=",
        "partial=",
        'cleanup() { rm -f -- "$staged" ${tmp:+"$tmp"} ${partial:+"$partial"}; }',
        'fail() { cleanup; say "$*: $path was not changed"; exit 1; }',
        "trap 'cleanup; say \"interrupted: $path was not changed\"; exit 1' HUP INT TERM",
    ]
    if follow_symlink:
        lines.append('if [ -L "$path" ]; then path="$(readlink -f -- "$path")"; fi')
    lines += [
        'tmp="$(dirname -- "$path")/.$(basename -- "$path").mmpush-new"',
        f'[ "$(sha "$staged")" = {q(change.sha256)} ] '
        '|| fail "the uploaded content is incomplete (disk full?)"',
    ]
    if expected_sha256 is not None:
        lines += [
            '[ -f "$path" ] || fail "the file is gone"',
            f'[ "$(sha "$path")" = {q(expected_sha256)} ] || fail "it changed on the host '
            'while this run was preparing (run again to merge with the new content)"',
        ]
    if backup_suffix is not None:
        lines += [
            f'backup="$path"{q(backup_suffix)}',
            'if [ -e "$path" ]; then',
            '  partial="$backup.mmpush-partial"',
            '  copy_checked "$path" "$partial" '
            '|| fail "could not save a verified backup (disk full?)"',
            '  mv -f -- "$partial" "$backup" && partial=',
            "fi",
        ]
    lines += [
        'rm -f -- "$tmp"',
        'cp -- "$staged" "$tmp" 2>/dev/null || fail "could not write the new content (disk full?)"',
    ]
    if owner is not None:
        lines.append(
            f'chown {q(owner)} -- "$tmp" && chmod {q(change.mode)} -- "$tmp" '
            '|| fail "could not set owner and mode"'
        )
    else:
        lines += [
            'if [ -e "$path" ]; then',
            '  chown --reference="$path" -- "$tmp" && chmod --reference="$path" -- "$tmp" '
            '|| fail "could not copy owner and mode"',
            "else",
            f'  chmod {q(change.mode)} -- "$tmp"',
            "fi",
        ]
    lines += [
        f'[ "$(sha "$tmp")" = {q(change.sha256)} ] || fail "the new content was not written '
        'whole (disk full?)"',
        'mv -fT -- "$tmp" "$path" || fail "could not move the new content into place"',
        "tmp=",
        'rm -f -- "$staged"',
    ]
    return "\n".join(lines) + "\n"


def nginx_transaction_script(
    changes: Sequence[FileChange], backup_dir: str, *, start_if_stopped: bool = True
) -> str:
    """Write or remove NGINX's files as one transaction, then ``nginx -t`` and reload.

    Every file is saved to ``backup_dir`` and the copy checked before any file changes. If
    writing any file, or ``nginx -t``, fails, every file already changed is put back from its
    verified copy and NGINX is not reloaded: it keeps serving what it served. If putting a
    file back fails, the run stops saying which file and where its verified copy is kept.

    ``start_if_stopped``: start NGINX when it is not running (else only reload a running one).
    """
    paths = [c.path for c in changes]
    news = [c.staged or "" for c in changes]
    shas = [c.sha256 or "" for c in changes]
    modes = [c.mode for c in changes]
    start = "systemctl start nginx" if start_if_stopped else "true"
    return (
        "\n".join(
            [
                PRELUDE,
                _array("paths", paths),
                _array("news", news),
                _array("shas", shas),
                _array("modes", modes),
                f"backup={q(backup_dir)}",
                "applied=()",
                "phase=saving",
                NGINX_TRANSACTION_BODY,
                "if systemctl is-active --quiet nginx; then",
                "  systemctl reload nginx || { say 'NGINX did not reload: the new configuration"
                " is in place and passed nginx -t'; exit 1; }",
                "else",
                f"  {start} || {{ say 'NGINX did not start with the new configuration"
                " (it passed nginx -t)'; exit 1; }",
                "fi",
            ]
        )
        + "\n"
    )


NGINX_TRANSACTION_BODY = r"""rollback() {
  local failed=() i
  for i in "${applied[@]}"; do
    restore_checked "$backup/old-$i" "${paths[$i]}" || failed+=("${paths[$i]}")
  done
  for i in "${!news[@]}"; do [ -z "${news[$i]}" ] || rm -f -- "${news[$i]}"; done
  if [ "${#failed[@]}" -gt 0 ]; then
    say "ROLLBACK INCOMPLETE: could not put back ${failed[*]}; their verified copies are kept" \
        "in $backup (its MANIFEST says which old-<n> is which file). NGINX was not reloaded," \
        "so it still serves the previous configuration, but would not start with the files on" \
        "disk: restore them by hand before restarting NGINX"
    return 1
  fi
  rm -rf -- "$backup"
  return 0
}
abort() {
  trap - HUP INT TERM
  if [ "$phase" = applying ]; then
    if rollback; then say "$*: rolled back: every file was put back from its verified copy" \
      "and NGINX was not reloaded; it still serves the previous configuration"; fi
  else
    for i in "${!news[@]}"; do [ -z "${news[$i]}" ] || rm -f -- "${news[$i]}"; done
    rm -rf -- "$backup"
    say "$*: nothing was changed; NGINX still serves the previous configuration"
  fi
  exit 1
}
trap 'abort "interrupted"' HUP INT TERM
for i in "${!paths[@]}"; do
  if [ -n "${news[$i]}" ] && [ "$(sha "${news[$i]}")" != "${shas[$i]}" ]; then
    abort "the uploaded ${paths[$i]} is incomplete (disk full?)"
  fi
done
rm -rf -- "$backup"
mkdir -p -- "$backup" || abort "could not create $backup"
for i in "${!paths[@]}"; do printf 'old-%s\t%s\n' "$i" "${paths[$i]}"; done > "$backup/MANIFEST" \
  || abort "could not write $backup/MANIFEST (disk full?)"
for i in "${!paths[@]}"; do
  if exists "${paths[$i]}"; then
    copy_checked "${paths[$i]}" "$backup/old-$i" \
      || abort "could not save a verified copy of ${paths[$i]} (disk full?)"
  fi
done
phase=applying
umask 022
for i in "${!paths[@]}"; do
  applied+=("$i")
  if [ -z "${news[$i]}" ]; then
    rm -f -- "${paths[$i]}" || abort "could not remove ${paths[$i]}"
  else
    mkdir -p -- "$(dirname -- "${paths[$i]}")" \
      || abort "could not create the directory of ${paths[$i]}"
    place_checked "${news[$i]}" "${paths[$i]}" "${shas[$i]}" "${modes[$i]}" \
      || abort "could not write ${paths[$i]} (disk full?)"
  fi
done
if ! output="$(nginx -t 2>&1)"; then
  printf '%s\n' "$output" >&2
  abort "nginx -t failed"
fi
phase=committed
trap - HUP INT TERM
for i in "${!news[@]}"; do [ -z "${news[$i]}" ] || rm -f -- "${news[$i]}"; done
rm -rf -- "$backup"
"""


def new_private_key_script(key_path: str) -> str:
    """Generate an EC P-256 private key at ``key_path`` (0600, directory 0700), checked to
    parse before it is moved into place; an existing key is never overwritten."""
    directory = str(PurePosixPath(key_path).parent)
    return (
        "\n".join(
            [
                PRELUDE,
                f"key={q(key_path)}",
                f"tmp={q(temp_beside(key_path))}",
                "trap 'rm -f -- \"$tmp\"' EXIT",
                f"mkdir -p -- {q(directory)} && chmod 700 -- {q(directory)}",
                'if [ -e "$key" ]; then exit 0; fi',
                'rm -f -- "$tmp"',
                'openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp" '
                '2>/dev/null || { say "could not generate a private key for $key (disk full?)";'
                " exit 1; }",
                'openssl pkey -in "$tmp" -noout 2>/dev/null '
                '|| { say "the new private key for $key is unreadable (disk full?)"; exit 1; }',
                'mv -fT -- "$tmp" "$key"',
            ]
        )
        + "\n"
    )


def release_unpack_script(
    download: str, unpack: str, target: str, sha256: str, binary: str, what: str
) -> str:
    """Check a downloaded (or uploaded) release archive against its pinned sha256, unpack it
    beside ``target``, check it holds an executable ``binary``, then move it into place. The
    archive is removed on every path; nothing is installed unless every step passed, and the
    installed (and running) releases are never touched."""
    return (
        "\n".join(
            [
                PRELUDE,
                "umask 022  # a release is readable by the service user, writable by root only",
                f"download={q(download)} unpack={q(unpack)} target={q(target)}",
                'trap \'rm -rf -- "$unpack" "$download"\' EXIT',
                '[ -f "$download" ] || { say "no archive at $download"; exit 1; }',
                'actual=$(sha "$download")',
                f'if [ "$actual" != {q(sha256)} ]; then',
                f'  say "sha256 mismatch for {what}: expected {sha256}, got $actual; nothing was '
                'installed"',
                "  exit 1",
                "fi",
                'rm -rf -- "$unpack" && mkdir -p -- "$unpack"',
                'tar -xzf "$download" -C "$unpack" --no-same-owner --strip-components=1 '
                f'2>/dev/null || {{ say "the {what} archive could not be unpacked whole (disk '
                'full? not a gzip tarball?); nothing was installed"; exit 1; }',
                f'if [ ! -x "$unpack"/{q(binary)} ]; then',
                f'  say "the archive has no executable {binary}: not a push proxy release; nothing '
                'was installed"',
                "  exit 1",
                "fi",
                f'printf "%s\\n" {q(sha256)} > "$unpack/.mmpush-sha256"',
                'chmod -R go-w -- "$unpack"',
                'rm -rf -- "$target" && mv -T -- "$unpack" "$target"',
            ]
        )
        + "\n"
    )
