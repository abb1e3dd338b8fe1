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
from edgekd.targets.families import FAMILIES, resolve_family
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


def is_current(profile: TargetProfile) -> bool:
    """False for a Jetson module that JetPack 6 no longer supports (TX2, Nano, Xavier): suggestions list it last."""
    if profile.kind != "jetson" or not profile.jetpack:
        return True
    return max(int(v.split(".")[0]) for v in profile.jetpack) >= 6


def is_family(name: object) -> bool:
    """True for ``jetson``, ``gpu`` and ``cpu``: "this kind of machine" (edgekd/targets/families.py)."""
    return isinstance(name, str) and name.strip().lower() in FAMILIES


def resolve_target(name: str | os.PathLike) -> tuple[TargetProfile, str | None]:
    """``(profile, reason)``: ``reason`` says why a family name (``jetson``, ``gpu``, ``cpu``) became this
    profile on this machine; None for a module name, an alias or a file, which name their profile."""
    if is_family(name):
        choice = resolve_family(str(name).strip().lower())
        return _bundled()[choice.name], f"--target {str(name).strip().lower()} -> {choice.name}: {choice.reason}"
    return load_target(name), None


def _suggestions(key: str, candidates: list[str], n: int = 3) -> list[str]:
    """The ``n`` names closest to ``key``, current modules first: a module JetPack 6 dropped loses a
    quarter of its similarity, so it is suggested only when it is clearly what was typed (``jetson-tx``)."""
    scored = []
    for cand in candidates:
        ratio = difflib.SequenceMatcher(None, key, cand).ratio()
        legacy = cand not in FAMILIES and not is_current(_bundled()[canonical_name(cand) or cand])
        score = ratio - (0.25 if legacy else 0.0)
        if ratio >= 0.4:
            scored.append((-score, cand))
    return [cand for _, cand in sorted(scored)[:n]]


def load_target(name: str | os.PathLike) -> TargetProfile:
    """Return the profile for a bundled target name (e.g. ``jetson-orin-nano``) or a YAML file path.

    Names and aliases are matched case-insensitively with ``_`` read as ``-`` (an alias gives the
    profile of its canonical name, e.g. ``jetson-orin-nano`` -> ``jetson-orin-nano-8gb``). A family
    name (``jetson``, ``gpu``, ``cpu``) gives this machine's profile (see :func:`resolve_target`).
    An unknown name raises an ``EdgekdError`` listing close matches, current modules first, and the known names.
    """
    if is_family(name):
        return resolve_target(name)[0]
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
    candidates = list(profiles) + list(_aliases()) + list(FAMILIES)
    close = _suggestions(key, candidates)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise EdgekdError(
        f"unknown target {str(name)!r}; {hint}known targets: {', '.join(target_names())}, or a family "
        f"({', '.join(FAMILIES)}: this machine's, or a stated default), or the path of your own profile YAML"
    )
