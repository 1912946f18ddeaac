import pytest

from policysupply._internal import bundle_rego
from policysupply._internal.engines.base import RegoDiagnostic
from policysupply.errors import BundleError


@pytest.mark.parametrize(
    ("results", "want"),
    [
        ([], None),
        ([{"expressions": [{"value": 1, "text": "x"}]}], 1),
        ([{"expressions": [{"value": 1}, {"value": 2}]}], [1, 2]),
        ([{"expressions": [{"value": True}], "bindings": {"x": 3}}], {"x": 3}),
    ],
)
def test_answer_is_the_value_the_values_or_the_bindings(results: list, want: object) -> None:
    assert bundle_rego.answer(results) == want


def test_raise_first_names_the_first_problem_and_lists_the_rest() -> None:
    bundle_rego.raise_first([])
    diags = [
        RegoDiagnostic(entry="a.rego", line=2, message="first"),
        RegoDiagnostic(entry="b.rego", line=None, message="second"),
    ]
    want = r"first \(1 more problem\(s\):\n  b.rego: second\)"
    with pytest.raises(BundleError, match=want) as e:
        bundle_rego.raise_first(diags)
    assert (e.value.entry, e.value.line) == ("a.rego", 2)
