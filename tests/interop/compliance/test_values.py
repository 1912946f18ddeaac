"""How the compliance runner and scripts/probe_embedded.py read expected bindings."""

from __future__ import annotations

from tests.interop.compliance.values import (
    comparable,
    expected_bindings,
    opa_order,
    result_bindings,
)


def test_numbers_compare_as_opa_compares_them() -> None:
    assert comparable(1) == comparable(1.0)
    assert comparable([1, {"a": 2}]) == comparable([1.0, {"a": 2.0}])
    # Past 2^53 a float would make neighbours equal: they stay exact.
    assert comparable(2**63 - 1) != comparable(2**63 - 2)


def test_object_keys_are_read_as_go_yaml_reads_them() -> None:
    assert comparable({7: "a", False: "b", None: "c"}) == comparable(
        {"7": "a", "false": "b", "null": "c"}
    )


def test_opa_order_across_types() -> None:
    values = [{"a": 1}, [1], "s", 2, 1.5, False, None]
    assert sorted(values, key=opa_order) == [None, False, 1.5, 2, "s", [1], {"a": 1}]


def test_result_bindings_as_the_case_asks() -> None:
    results = [{"expressions": [], "bindings": {"x": [3, 1, 2], "__localq0__": 1}}]
    want = expected_bindings([{"x": [1, 2, 3]}])
    assert result_bindings(results, ignore_generated_vars=True, sort_bindings=True) == want
    assert result_bindings(results, ignore_generated_vars=True, sort_bindings=False) != want
    assert result_bindings(results, ignore_generated_vars=False, sort_bindings=True) != want
    assert expected_bindings(None) == set()
