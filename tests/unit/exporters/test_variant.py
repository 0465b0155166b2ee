"""The model variant as one value: validated once, spelled one way (as_key) for experiment files and caches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike.errors import ExportError, InputError
from lookalike.exporters.variant import INT8_SCHEMES, KEYS, Variant, describe_record


def test_a_variant_is_spelled_as_given():
    v = Variant.coerce({"quantize": "int8", "per_channel": True})
    assert v.int8 and v.scheme == "dynamic-per-channel" and v.as_key() == {"quantize": "int8", "per_channel": True}
    assert Variant.coerce({"keep_layers": [1, 3, 5]}).as_key() == {"keep_layers": [1, 3, 5]}
    assert Variant().as_key() == {} and Variant().describe() == "fp32" and not Variant().compressed
    assert Variant(per_channel=True).int8  # a scheme alone means int8, as on the command line
    assert Variant(fp16=True).fusion_set == "gpu" and Variant().fusion_set == "cpu"
    assert Variant(keep_layers=[2, 5]).replace(keep_layers=None) == Variant()


def test_a_variant_refuses_what_cannot_be_made():
    with pytest.raises(ExportError, match="choose one"):
        Variant(quantize="int8", fp16=True)
    with pytest.raises(ExportError, match="unknown int8 scheme"):
        Variant(int8_scheme="int4")
    with pytest.raises(ExportError, match="unknown quantization"):
        Variant(quantize="int4")
    with pytest.raises(InputError, match="fp17.*did you mean 'fp16'"):
        Variant.coerce({"fp17": True}, "models[1].variant")
    with pytest.raises(InputError, match="true or false"):
        Variant.coerce({"fp16": "yes"})
    with pytest.raises(InputError, match="layer indices"):
        Variant.coerce({"keep_layers": "1,3"})


def test_the_manifest_record_says_what_was_made():
    r = Variant(quantize="int8").record("dynamic-per-channel", True, {"Attention": 6})
    assert r == {"quantize": "int8", "int8_scheme": "dynamic-per-channel", "per_channel": True, "fp16": False,
                 "keep_layers": None, "optimized": True, "fusions": "cpu", "fused_operators": {"Attention": 6},
                 "description": "int8 dynamic per-channel, ORT-fused"}
    assert Variant(keep_layers=(1, 3)).record(None, False)["description"] == "layers 1,3, fp32"
    assert describe_record({"fp16": True, "optimized": True, "fusions": "gpu"}) == "fp16, ORT-fused (GPU set)"


variants = st.fixed_dictionaries({}, optional={
    "quantize": st.sampled_from(["int8", None]), "int8_scheme": st.sampled_from([None, "auto", *INT8_SCHEMES]),
    "per_channel": st.booleans(), "fp16": st.booleans(),
    "keep_layers": st.none() | st.lists(st.integers(0, 11), max_size=4), "optimize": st.sampled_from([None, True, False])})


@given(variants)
def test_as_key_round_trips_and_is_the_given_non_defaults(d):
    try:
        v = Variant.coerce(d)
    except InputError as exc:
        assert "choose one" in str(exc) and d.get("fp16") and (d.get("quantize") or d.get("int8_scheme")
                                                                  or d.get("per_channel"))
        return
    assert Variant.coerce(v.as_key()) == v
    assert set(v.as_key()) <= set(KEYS)
    defaults = {"per_channel": False, "fp16": False}
    assert v.as_key() == {k: x for k, x in d.items() if x != defaults.get(k)}
