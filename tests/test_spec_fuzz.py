"""Spec fuzzing (property-based, hypothesis): every input either validates or raises the zoo's
own SpecError, never another exception; what validates survives a write-read round trip."""
from __future__ import annotations

import copy

import yaml

from hypothesis import HealthCheck, given, settings, strategies as st  # a test dependency: never skipped

from conftest import REPO
from zoo import spec as specs
from zoo.errors import SpecError

VALID = yaml.safe_load((REPO / "zoo" / "standard" / "packages" / "stardist-dsb-fluo-2d" / "0.1.1" / "zoo.yaml")
                       .read_text())
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


def _accepts_or_refuses(call, *args):
    try:
        result = call(*args)
    except SpecError as e:
        assert str(e)                                 # says something
        return None
    assert isinstance(result, specs.Spec)
    again = specs.loads(specs.dump(result))           # what validates, writes and reads back the same
    assert again.to_dict() == result.to_dict()
    return result


def _paths(node, prefix=()):
    """Every key path in a nested dict/list."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(VALID) if p]


def _set(data, path, value, delete=False):
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@SETTINGS
@given(st.text(max_size=400))
def test_any_text(text):
    _accepts_or_refuses(specs.loads, text)


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes(data):
    _accepts_or_refuses(specs.load_bytes, data)


@SETTINGS
@given(values)
def test_any_yaml_document(value):
    _accepts_or_refuses(specs.loads, yaml.safe_dump(value))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(PATHS), values, st.booleans()), min_size=1, max_size=4))
def test_a_valid_spec_with_fields_changed_or_removed(changes):
    data = copy.deepcopy(VALID)
    for path, value, delete in changes:
        try:
            _set(data, path, value, delete)
        except (KeyError, IndexError, TypeError):    # an earlier change removed or replaced the parent
            continue
    _accepts_or_refuses(specs.validate, data)


def test_the_unchanged_spec_is_valid():
    assert _accepts_or_refuses(specs.validate, copy.deepcopy(VALID)) is not None
