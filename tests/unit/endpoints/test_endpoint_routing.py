"""Endpoint specs and the router: parsing and refusals, weighted picks, forced variants, sticky keys."""

from __future__ import annotations

import pytest

from inferd.endpoints.model import check_against, parse_endpoint
from inferd.endpoints.router import Compiled, key_point
from inferd.errors import ErrorCode, InferError

SPLIT = {"variants": [{"name": "blue", "model": "m", "version": 1, "weight": 80},
                      {"name": "green", "model": "m:2", "weight": 20},
                      {"name": "off", "model": "m", "version": 3, "weight": 0},
                      {"name": "copy", "model": "other", "shadow": True, "sample": "10%"}]}


def test_a_spec_parses_with_versions_shadows_and_percent_strings():
    endpoint = parse_endpoint("front", SPLIT)
    assert [v.name for v in endpoint.live] == ["blue", "green", "off"]
    assert endpoint.variant("green").version == 2
    assert endpoint.shadows[0].sample == 10.0
    assert parse_endpoint("front", endpoint.to_dict()).variants == endpoint.variants


def test_variants_may_be_a_table_keyed_by_name():
    endpoint = parse_endpoint("e", {"variants": {"a": {"model": "m", "weight": 1}}})
    assert endpoint.variants[0].name == "a"


@pytest.mark.parametrize(("spec", "words"), [
    ({"variants": [{"name": "a", "model": "m", "weight": 0}]}, "sum to a positive number"),
    ({"variants": [{"name": "a", "model": "m", "weight": -1}, {"name": "b", "model": "m", "weight": 2}]}, ">= 0"),
    ({"variants": [{"name": "a", "model": "m", "shadow": True}]}, "sum to a positive number"),
    ({"variants": []}, "non-empty"),
    ({"variants": [{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]}, "repeat"),
    ({"variants": [{"name": "a", "model": "m", "version": 0}]}, "positive integer"),
    ({"variants": [{"name": "a", "model": "m", "weight": "lots"}]}, "must be a number"),
])
def test_bad_specs_are_invalid_argument(spec, words):
    with pytest.raises(InferError) as caught:
        parse_endpoint("e", spec)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert words in caught.value.message


def test_unknown_models_versions_and_a_model_of_the_same_name_are_refused():
    endpoint = parse_endpoint("front", SPLIT)
    models = {"m": {1, 2, 3}, "other": {1}}

    def check(known):
        check_against(endpoint, lambda n: n in known, lambda n, v: v in known.get(n, ()))

    check(models)
    with pytest.raises(InferError, match="unknown model 'other'"):
        check({"m": {1, 2, 3}})
    with pytest.raises(InferError, match="has no version 3"):
        check({"m": {1, 2}, "other": {1}})
    with pytest.raises(InferError, match="may not share"):
        check({**models, "front": {1}})


def test_picks_follow_the_weights_and_a_zero_weight_is_never_picked():
    compiled = Compiled.of(parse_endpoint("front", SPLIT))
    picks = [compiled.pick(None, None, lambda i=i: i / 1000).name for i in range(1000)]
    assert picks.count("blue") == 800
    assert picks.count("green") == 200
    assert compiled.weights() == {"blue": 80.0, "green": 20.0, "off": 0.0}


def test_a_forced_variant_wins_and_an_unknown_one_is_not_found_naming_the_variants():
    compiled = Compiled.of(parse_endpoint("front", SPLIT))
    assert compiled.pick("off", None).name == "off"  # forced: even at weight 0
    with pytest.raises(InferError) as caught:
        compiled.pick("copy", None)  # a shadow never answers
    assert caught.value.code is ErrorCode.NOT_FOUND
    assert "'blue', 'green', 'off'" in caught.value.message


def test_a_route_key_always_lands_on_the_same_variant():
    compiled = Compiled.of(parse_endpoint("front", SPLIT))
    first = {f"k{i}": compiled.pick(None, f"k{i}").name for i in range(500)}
    assert all(compiled.pick(None, key).name == name for key, name in first.items())
    assert set(first.values()) == {"blue", "green"}
    assert key_point("user-1") == key_point("user-1")  # no per-process seed
    assert 0 <= key_point("") < 1
