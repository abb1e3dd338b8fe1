"""Property-based tests (issue 20): every value of every config field, given in a YAML file, by ``--set`` or
straight to ``build_config``, is either accepted or refused with one line (exit 2 in the CLI), never a
traceback. Needs ``hypothesis`` (the dev extra); skipped without it."""

from __future__ import annotations

import json
import math
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from edgekd.config import RunConfig, build_config
from edgekd.errors import EdgekdError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None:
            out.append(prefix + name)  # the section itself may be given a bad value too
            out += _leaf_paths(sub, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


PATHS = _leaf_paths(RunConfig)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["auto", "x86-cpu", "jetson", "resnet8", "digits", "cuda:9", "-1", "1e999", "", "~", "[1"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# a few values that are wrong for nearly every field, tried on every field
ODD = ["@@", -1, -1e300, 1e300, math.nan, math.inf, [1, "a"], {"x": 1}, True, "", 0]


def _accepted_or_one_line(path: str, value) -> None:
    try:
        build_config(None, {path: value})
    except EdgekdError as err:
        message = str(err)
        assert message and "\n" not in message, repr(message)


def test_the_paths_cover_every_field():
    assert {"seed", "distill.lr", "bench.gates.max_latency_ms", "quantize.calibrator", "search.trials"} <= set(PATHS)
    assert len(PATHS) > 100


@pytest.mark.parametrize("path", PATHS)
def test_every_field_refuses_odd_values_in_one_line(path):
    for value in ODD:
        _accepted_or_one_line(path, value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=VALUES)
def test_any_value_of_any_field_is_accepted_or_refused_in_one_line(path, value):
    _accepted_or_one_line(path, value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(st.sampled_from(PATHS[:40] + ["bogus", "distill"]), VALUES, max_size=4))
def test_any_yaml_mapping_is_accepted_or_refused_in_one_line(tree):
    nested: dict = {}
    for dotted, value in tree.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[leaf] = value
    try:
        build_config(None, None, base=nested)
    except EdgekdError as err:
        assert "\n" not in str(err)


def _one_line_exit_2(result) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), result.stderr
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


_CLI = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _cli_set(cli, scratch, path, value) -> None:
    """`compress --set PATH=VALUE` without a teacher: a bad value is named, a good one reaches "no teacher"."""
    if path == "teacher.checkpoint":
        value = "missing.pt" if value is None else value  # never a real file: the run must not start
    raw = json.dumps(value, allow_nan=True)  # JSON is YAML: what a user types, quoted for the shell
    _one_line_exit_2(cli("compress", "--set", f"{path}={raw}", "--out", scratch / "never", "--quiet"))
    assert not (scratch / "never").exists()


@settings(max_examples=40, **_CLI)
@given(path=st.sampled_from(PATHS), value=VALUES)
def test_cli_set_any_value_exits_2_with_one_line(cli, scratch, path, value):
    _cli_set(cli, scratch, path, value)


@pytest.mark.slow
@settings(max_examples=1500, **_CLI)
@given(path=st.sampled_from(PATHS), value=VALUES)
def test_cli_set_many_values_exit_2_with_one_line(cli, scratch, path, value):
    _cli_set(cli, scratch, path, value)


@settings(max_examples=40, **_CLI)
@given(
    text=st.text(max_size=80)
    | st.sampled_from(["a: !!python/object:os.system {}\n", "{", "- 1\n- 2\n", "x: [\n", "\udcff: 1\n", "\x00"])
)
def test_cli_any_config_file_exits_2_with_one_line(cli, scratch, text):
    path = scratch / "c.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # lone surrogates: bytes that are not UTF-8
    _one_line_exit_2(cli("compress", "--config", path, "--out", scratch / "never", "--quiet"))
