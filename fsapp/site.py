"""A site on disk: laying one out from the shipped sample, and what FreeSWITCH can read of it.

``lay_out`` writes a config from the shipped sample, copies the shipped prompts where
FreeSWITCH can read them (never replacing a file that is there) and, when asked, loads
the sample customers. ``fs_access_problem`` tells, from the mode bits, whether the user
FreeSWITCH runs as can reach the prompts; ``empty_directory_note`` why every
identification fails on an empty local customer directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fsapp import config as configmod

EMPTY_DIRECTORY = (
    "the local customer directory is empty: every identification fails (no customers) "
    "until they are imported (fsapp customers import FILE.csv)"
)
CUSTOMERS = ("empty", "sample")
_DIR_MODE, _FILE_MODE = 0o755, 0o644


class SiteError(Exception):
    """The site cannot be laid out as asked; the message names the file or argument."""


@dataclass
class Layout:
    """What ``lay_out`` did."""

    config: Path
    sounds: Path
    copied: int = 0
    kept: int = 0  # prompt files already there, left as they were
    customers: str = ""  # the line saying the sample customers were loaded


# -- laying out a site -----------------------------------------------------------------


def _replace_line(text: str, section: str, start: str, line: str) -> str:
    """``text`` with the one line starting ``start`` in ``[section]`` replaced by ``line``, keeping its comment."""
    lines = text.splitlines(keepends=True)
    found, current = [], ""
    for i, old in enumerate(lines):
        if old.startswith("["):
            current = old[1:old.index("]")] if "]" in old else ""
        elif current == section and old.startswith(start):
            found.append(i)
    if len(found) != 1:
        raise AssertionError(f"the sample config has {len(found)} lines starting {start!r} in [{section}]")
    old = lines[found[0]]
    comment = old[old.index("#"):].rstrip("\n") if "#" in old else ""
    lines[found[0]] = (f"{line:<36}{comment}".rstrip() if comment else line) + "\n"
    return "".join(lines)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(sounds_dir: str, language: str, storage_url: str) -> str:
    """The shipped sample with this site's prompt folder, language and database."""
    text = configmod.SAMPLE_CONFIG.read_text(encoding="utf-8")
    text = _replace_line(text, "sounds", "dir = ", f"dir = {_toml_string(sounds_dir)}")
    text = _replace_line(text, "sounds", "language = ", f"language = {_toml_string(language)}")
    text = _replace_line(text, "web", "language = ", f"language = {_toml_string(language)}")
    text = _replace_line(text, "storage", "url = ", f"url = {_toml_string(storage_url)}")
    header = ("# fsapp site configuration, laid out by `fsapp init` from the shipped sample.\n"
              "# Check it after every change: fsapp check -c THIS_FILE\n")
    return header + text.split("\n\n", 1)[1]


def copy_prompts(dest: Path, source: Path | None = None) -> tuple[int, int]:
    """Copy the shipped prompt set into ``dest``, readable by all; (copied, kept) file counts.

    A file already at ``dest`` (a designer's recording) is never replaced.
    """
    source = source or configmod.shipped_sounds()
    copied = kept = 0
    for path in sorted(source.rglob("*")):
        target = dest / path.relative_to(source)
        if path.is_dir():
            continue
        if target.exists():
            kept += 1
            continue
        _make_dirs(target.parent)
        shutil.copyfile(path, target)
        os.chmod(target, _FILE_MODE)
        copied += 1
    return copied, kept


def _make_dirs(folder: Path) -> None:
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir()
        os.chmod(made, _DIR_MODE)


def lay_out(site: Path, *, sounds_dir: Path | None = None, language: str = "fa",
            storage_url: str = "sqlite:fsapp.db", customers: str = "empty") -> Layout:
    """Write ``site/fsapp.toml``, copy the prompts, load the sample customers if asked.

    An existing config is never replaced (SiteError); the prompts default to
    ``site/sounds``, named relative to the config then.
    """
    if customers not in CUSTOMERS:
        raise SiteError(f"--customers: must be one of {', '.join(CUSTOMERS)}, not {customers!r}")
    site = site.absolute()
    cfg_path = site / "fsapp.toml"
    if cfg_path.exists():
        raise SiteError(f"{cfg_path}: already exists, left as it is (lay the site out in another folder)")
    sounds = (sounds_dir or site / "sounds").absolute()
    shown = os.path.relpath(sounds, site) if sounds.is_relative_to(site) else str(sounds)
    text = config_text(shown, language, storage_url)
    _make_dirs(site)
    copied, kept = copy_prompts(sounds)
    tmp = cfg_path.with_name(".fsapp.toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o640)  # it will hold the CRM's URL; secrets live in the environment file
    tmp.replace(cfg_path)
    layout = Layout(cfg_path, sounds, copied, kept)
    if customers == "sample":
        from fsapp.simulate import seed_sample_directory

        layout.customers = seed_sample_directory(configmod.load(cfg_path, check_files=False)).strip()
    return layout


# -- what FreeSWITCH can read ----------------------------------------------------------


def _may(st: os.stat_result, uid: int, gids: Iterable[int], bits: int) -> bool:
    """Whether mode bits ``bits`` (of r=4, w=2, x=1) are granted to uid/gids by ``st``."""
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid in gids:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def _describe(path: Path, st: os.stat_result) -> str:
    def name(get, ident: int) -> str:
        try:
            return get(ident)[0]
        except KeyError:
            return str(ident)

    import grp

    owner = f"{name(pwd.getpwuid, st.st_uid)}:{name(grp.getgrgid, st.st_gid)}"
    return f"{path} is {stat.S_IMODE(st.st_mode):04o} {owner}"


def fs_access_problem(folder: Path, files: Iterable[Path], user: str) -> str | None:
    """Why ``user`` cannot read the prompt ``files`` under ``folder``, or None.

    None also where it cannot tell: no such user on this host, or ``folder`` not here
    (FreeSWITCH on another host). Only mode bits are read, not ACLs.
    """
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    if pw.pw_uid == 0 or not folder.is_dir():
        return None
    gids = set(os.getgrouplist(user, pw.pw_gid))
    checked: set[Path] = set()
    for path in [folder, *files]:
        path = path.absolute()
        for parent in reversed(path.parents):
            if parent in checked:
                continue
            st = parent.stat()
            if not _may(st, pw.pw_uid, gids, 1):
                return f"{_describe(parent, st)}: user {user} cannot enter it"
            checked.add(parent)
        if not path.exists():
            continue  # a missing prompt is check's own message
        st = path.stat()
        need = 5 if path.is_dir() else 4
        if not _may(st, pw.pw_uid, gids, need):
            return f"{_describe(path, st)}: user {user} cannot read it"
    return None


def access_warning(cfg: configmod.Config) -> str | None:
    """``file:key: warning: ...`` when FreeSWITCH's user cannot read the prompts, where this host can tell."""
    from fsapp import sounds

    key = "sounds.fs_dir" if cfg.sounds.fs_dir else "sounds.dir"
    folder = Path(cfg.sounds.fs_dir or cfg.sounds.dir)
    files = [
        sounds.prompt_path(folder, cfg.sounds.language, name, rate)
        for name in configmod.prompt_names(cfg)
        for rate in sounds.RATES
    ]
    why = fs_access_problem(folder, files, cfg.sounds.fs_user)
    if why is None:
        return None
    return (f"{cfg.file}:{key}: warning: FreeSWITCH (user {cfg.sounds.fs_user}) cannot read the prompts: {why}; "
            "put them where it can read, like its own $${sounds_dir} (fsapp init --sounds-dir DIR)")


def warnings(cfg: configmod.Config, *, sample: bool = False) -> list[str]:
    """What will not stop the daemon but will stop calls: prompts FreeSWITCH cannot read, no customers.

    The shipped sample loads its sample customers itself (simulate), so its directory is not reported.
    """
    found = [access_warning(cfg), None if sample else empty_directory_note(cfg)]
    return [line for line in found if line]


def empty_directory_note(cfg: configmod.Config) -> str | None:
    """EMPTY_DIRECTORY with the config's name when its local directory has no customers.

    Only a SQLite file that exists is read (a check must not create the database);
    None for other CRMs, PostgreSQL, or a directory with customers.
    """
    if cfg.crm.kind != "local" or not cfg.storage_url.startswith("sqlite:"):
        return None
    path = configmod.sqlite_path(cfg.storage_url)
    if path.exists():
        from fsapp.store import open_store

        try:
            store = open_store(cfg.storage_url, pool_size=1)
        except Exception:  # noqa: BLE001 - unreadable here: serve will say so itself
            return None
        try:
            if store.customer_count():
                return None
        finally:
            store.close()
    return f"{cfg.file}:crm.kind: warning: {EMPTY_DIRECTORY}"
