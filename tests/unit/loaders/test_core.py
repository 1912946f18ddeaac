"""The REST loader's pure helpers: data paths, module ids, roots, base documents."""

from __future__ import annotations

from policysupply import (
    Bundle,
)
from policysupply.loaders._api import MISSING
from policysupply.loaders._core import (
    base_only,
    effective_roots,
    module_prefix,
    split_path,
    virtual_paths,
)


def test_split_paths() -> None:
    assert split_path("k8s/admission/allow") == ("k8s", "admission", "allow")
    assert split_path("data.k8s.admission.allow") == ("k8s", "admission", "allow")
    assert split_path("/k8s/") == ("k8s",)
    assert split_path("data") == ()


def test_module_prefixes_never_nest() -> None:
    a, b = module_prefix("host/acme/policy"), module_prefix("host/acme/policy/k8s")
    assert not (a + "k8s/~/x.rego").startswith(b)
    assert not b.startswith(a)


def test_rootless_bundle_owns_its_top_level_documents() -> None:
    bundle = Bundle(modules={"a.rego": "package alpha.x\nallow := true\n"}, data={"beta": {"k": 1}})
    assert effective_roots(bundle) == (("alpha",), ("beta",))


def test_base_documents_are_separated_from_rule_values() -> None:
    policies = [
        {
            "id": "p",
            "ast": {
                "package": {
                    "path": [
                        {"type": "var", "value": "data"},
                        {"type": "string", "value": "a"},
                        {"type": "string", "value": "b"},
                    ]
                },
                "rules": [
                    {"head": {"name": "allow", "ref": [{"type": "var", "value": "allow"}]}},
                    {
                        "head": {
                            "name": "q",
                            "ref": [
                                {"type": "var", "value": "q"},
                                {"type": "string", "value": "r"},
                            ],
                        }
                    },
                    {
                        "head": {
                            "name": "s",
                            "ref": [{"type": "var", "value": "s"}, {"type": "var", "value": "x"}],
                        }
                    },
                ],
            },
        }
    ]
    virtual = virtual_paths(policies)
    assert virtual == [("a", "b", "allow"), ("a", "b", "q", "r"), ("a", "b", "s")]
    merged = {"b": {"allow": True, "q": {"r": 2, "keep": 1}, "s": [1], "users": ["x"]}}
    assert base_only(merged, ("a",), virtual) == {"b": {"q": {"keep": 1}, "users": ["x"]}}
    # Only rule values under the root: no base document there at all.
    assert base_only({"b": {"allow": True, "s": []}}, ("a",), virtual) is MISSING
    # A root at or under a rule cannot hold base data.
    assert base_only(True, ("a", "b", "allow"), virtual) is MISSING
    assert base_only([1], ("a", "b", "s", "x"), virtual) is MISSING
    # Nothing in OPA, and roots no rule touches, pass through.
    assert base_only(MISSING, ("a",), virtual) is MISSING
    assert base_only({"k": 1}, ("c",), virtual) == {"k": 1}
