"""Finding target profiles: the bundled YAML files, by name, or a user's own YAML file.

Bundled profiles live in ``edgekd/targets/profiles/<name>.yaml`` (package data, read with
``importlib.resources``). Adding a target is adding one file there.
"""

from __future__ import annotations

import difflib
import functools
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgekd.errors import EdgekdError
from edgekd.targets.profile import TargetProfile

_PROFILE_SUFFIXES = (".yaml", ".yml")


def _parse_profile(text: str, origin: str) -> TargetProfile:
    """Validate the YAML ``text`` of a profile; ``origin`` names it in error messages."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgekdError(f"target profile {origin} is not valid YAML ({first}); fix the file") from err
    if not isinstance(data, dict):
        raise EdgekdError(f"target profile {origin} must be a YAML mapping of fields; fix the file")
    try:
        return TargetProfile.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "profile"
        raise EdgekdError(
            f"target profile {origin}: field '{where}': {first['msg']}; "
            f"fix it (allowed fields: {', '.join(TargetProfile.model_fields)})"
        ) from err


@functools.cache
def _bundled() -> dict[str, TargetProfile]:
    """All bundled profiles by name (read once; profiles are frozen, so sharing them is safe)."""
    folder = resources.files("edgekd.targets").joinpath("profiles")
    profiles: dict[str, TargetProfile] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(_PROFILE_SUFFIXES):
            continue
        profile = _parse_profile(entry.read_text(encoding="utf-8"), f"edgekd/targets/profiles/{entry.name}")
        stem = entry.name.rsplit(".", 1)[0]
        if profile.name != stem:  # a packaging bug, not a user error
            raise ValueError(f"bundled profile {entry.name} declares name {profile.name!r}")
        profiles[profile.name] = profile
    return profiles


@functools.cache
def _aliases() -> dict[str, str]:
    """Alias -> canonical name of the bundled profiles (e.g. jetson-orin-nano -> jetson-orin-nano-8gb)."""
    out: dict[str, str] = {}
    for profile in _bundled().values():
        for alias in profile.aliases:
            if alias in _bundled() or alias in out:  # a packaging bug, not a user error
                raise ValueError(f"alias {alias!r} of {profile.name} is already taken")
            out[alias] = profile.name
    return out


def target_names() -> list[str]:
    """Names of the bundled targets, sorted (aliases not included; see :func:`canonical_name`)."""
    return sorted(_bundled())


def canonical_name(name: str) -> str | None:
    """The bundled profile name that ``name`` (a name or an alias, any case, ``_`` for ``-``) means."""
    key = str(name).strip().lower().replace("_", "-")
    if key in _bundled():
        return key
    return _aliases().get(key)


def list_targets() -> list[TargetProfile]:
    """The bundled target profiles, sorted by name."""
    return [_bundled()[name] for name in target_names()]


def _looks_like_path(name: str) -> bool:
    """True when ``name`` is meant as a file rather than a bundled target name."""
    return name.endswith(_PROFILE_SUFFIXES) or os.sep in name or "/" in name


def load_target(name: str | os.PathLike) -> TargetProfile:
    """Return the profile for a bundled target name (e.g. ``jetson-orin-nano``) or a YAML file path.

    Names and aliases are matched case-insensitively with ``_`` read as ``-`` (an alias gives the
    profile of its canonical name, e.g. ``jetson-orin-nano`` -> ``jetson-orin-nano-8gb``). An unknown name raises an
    ``EdgekdError`` listing close matches and the known names.
    """
    if isinstance(name, os.PathLike) or _looks_like_path(str(name)):
        path = Path(name)
        if not path.is_file():
            raise EdgekdError(
                f"target profile file {path} does not exist; pass an existing YAML file or one of: "
                f"{', '.join(target_names())}"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as err:
            raise EdgekdError(
                f"target profile file {path} cannot be read as YAML text ({err}); pass a profile YAML"
            ) from None
        return _parse_profile(text, str(path))
    key = str(name).strip().lower().replace("_", "-")
    profiles = _bundled()
    found = canonical_name(key)
    if found is not None:
        return profiles[found]
    close = difflib.get_close_matches(key, list(profiles) + list(_aliases()), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise EdgekdError(
        f"unknown target {str(name)!r}; {hint}known targets: {', '.join(target_names())} "
        "(or pass the path of your own profile YAML)"
    )
