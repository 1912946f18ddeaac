#!/usr/bin/env python3
"""Differential fuzzing of the embedded engine (rego-cpp) against real OPA.

Generates small Rego v1 modules of the kind admission and gate policies are
made of (numbers, strings, sets and objects, comprehensions, ``every`` and
``some ... in``, ``with``, defaults, partial rules, functions with several
definitions and ``else``, negation of undefined, the builtins admission rules
call) with an input document, deterministically from a seed, and evaluates
every rule of each module with both engines:

* ``EmbeddedEngine`` (what ``Bundle.evaluate(..., engine="embedded")`` runs);
* one ``opa run --server`` (the pinned binary) with strict builtin errors,
  the module PUT to ``/v1/policies`` and each rule read from ``/v1/data``.

A case passes when both answer the same value (or both are undefined, or both
fail), or when the embedded engine raised ``BundleError`` (which includes
``UnsupportedByEngineError``). Anything else is a silent disagreement::

    python scripts/difffuzz_rego.py --seed 1 --cases 2000 --out /tmp/difffuzz.jsonl

Only disagreements are written to ``--out`` (module, input, rule, both answers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# -- generation -----------------------------------------------------------------

NUMS = [
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "3",
    "7",
    "10",
    "0.5",
    "-2.5",
    "1.0",
    "2.0",
    "0.1",
    "0.2",
    "0.3",
    "1e3",
    "1E2",
    "2.5e-3",
    "1e400",
    "-1e400",
    "9007199254740991",
    "9007199254740993",
    "12345678901234567890",
    "4294967296",
    "2147483648",
    "1.5",
    "3.14159",
    "100000000000000000000.0",
    "1e-7",
    "0.000001",
]
WORDS = [
    "nginx",
    "alpine:3.19",
    "ghcr.io/acme/app@sha256:abc",
    "registry.local/team/img:v1.2.3",
    "prod",
    "dev",
    "a",
    "",
    " padded ",
    "a,b,c",
    "a.b.c",
    "x-y_z",
    "ABC",
    "Mixed Case",
    "100Mi",
    "1Gi",
    "2G",
    "512Ki",
    "10m",
    "1.5Gi",
    "v1.2.3",
    "1.2.3",
    "1.2.3-rc.1",
    "1.2.3+build",
    "2026-12-02T17:00:00Z",
    "2026-12-02T17:00:00.123456789+02:00",
    "not-a-date",
    "10.0.0.0/8",
    "10.1.2.3",
    "192.168.0.0/16",
    "::1",
    "aGVsbG8=",
    "aGVsbG8",
    "%s-%v",
    "*.example.com",
    "foo.example.com",
    "[1,2]",
    "null",
    "1e3",
    "0x10",
    " 42 ",
    "-0",
    "true",
]
REPLACE_PATS = ["`[0-9]+`", "`^a`", "`\\.`", "`(a|b)`"]
SPLIT_PATS = ["`[.:]`", "`,`", "`\\s+`"]
SEPS = ['","', '"."', '":"', '""', '"/"']
FIND_PATS = ["`[a-z]+`", "`[0-9]`", "`.`"]
RAW_JSON = ['"[1, 2.0, 1e2, -0, 0.1]"', '"123456789012345678901"', '"true"', '"1e400"', '"[]"']
MSGS = ["x", 'sprintf("bad %v", [x])', 'concat(":", ["d", type_name(x)])']
GLOBS = ['"*.example.com"', '"ghcr.io/**"', '"*"', '"a?c"', '"[ab]*"', '"{a,b}*"']
GLOB_DELIMS = ["[]", '["."]', '["/"]', "null"]
ODD_STRINGS = [
    "h\u00e9llo",
    "\u00c9t\u00e9",
    "\u4e2d\u6587",
    "tab\there",
    'quo"te',
    "back\\slash",
    "line\nbreak",
    "\U0001f600",
]


def rego_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=random.random() < 0.5)


class Gen:
    """One module: rules r0..rN over ``input`` (a fixed shape, random values)."""

    def __init__(self, rng: random.Random, pkg: str = "fz") -> None:
        self.rng = rng
        self.pkg = pkg
        self.rules: list[str] = []
        self.queryable: list[str] = []
        self.helpers = 0

    # small pieces
    def pick(self, xs: list[Any]) -> Any:
        return self.rng.choice(xs)

    def word(self) -> str:
        if self.rng.random() < 0.04:
            return rego_str(self.pick(ODD_STRINGS))
        return json.dumps(self.pick(WORDS))

    def num(self) -> str:
        return str(self.pick(NUMS))

    def input_ref(self, kind: str) -> str:
        return {
            "num": self.pick(["input.n", "input.m", "input.big", "input.f", "input.missing_n"]),
            "str": self.pick(
                ["input.name", "input.image", "input.ns", "input.mem", "input.missing"]
            ),
            "arr": self.pick(["input.images", "input.nums", "input.tags", "input.empty"]),
            "obj": self.pick(["input.labels", "input.limits", "input.meta"]),
        }[kind]

    def num_expr(self, d: int = 0) -> str:
        r = self.rng.random()
        if d > 2 or r < 0.3:
            return self.num() if self.rng.random() < 0.6 else self.input_ref("num")
        a, b = self.num_expr(d + 1), self.num_expr(d + 1)
        c = self.rng.random()
        if c < 0.35:
            return f"({a} {self.pick(['+', '-', '*', '/', '%'])} {b})"
        if c < 0.55:
            return f"{self.pick(['round', 'ceil', 'floor', 'abs'])}({a})"
        if c < 0.65:
            return f"count({self.coll_expr(d + 1)})"
        if c < 0.75:
            return f"{self.pick(['sum', 'max', 'min', 'product'])}({self.num_arr(d + 1)})"
        if c < 0.82:
            return f"to_number({self.str_expr(d + 1)})"
        if c < 0.87:
            return f"units.parse_bytes({self.str_expr(d + 1)})"
        if c < 0.9:
            return f"units.parse({self.str_expr(d + 1)})"
        if c < 0.93:
            return f"indexof({self.str_expr(d + 1)}, {self.str_expr(d + 1)})"
        if c < 0.96:
            return f"time.parse_rfc3339_ns({self.str_expr(d + 1)})"
        return f"time.parse_duration_ns({self.str_expr(d + 1)})"

    def num_arr(self, d: int) -> str:
        if self.rng.random() < 0.4:
            return self.pick(["input.nums", "input.empty", "[]"])
        return "[" + ", ".join(self.num_expr(d + 1) for _ in range(self.rng.randint(0, 4))) + "]"

    def str_expr(self, d: int = 0) -> str:
        r = self.rng.random()
        if d > 2 or r < 0.35:
            return self.word() if self.rng.random() < 0.6 else self.input_ref("str")
        c = self.rng.random()
        s = self.str_expr(d + 1)
        if c < 0.1:
            return f"upper({s})"
        if c < 0.18:
            return f"lower({s})"
        if c < 0.25:
            return f"concat({self.word()}, {self.str_arr(d + 1)})"
        if c < 0.32:
            return f"sprintf({self.pick(['%s', '%v', '%s/%s', '%d', '%v-%d', '%.2f', '%x', '%q', '%5s', '%T'])!r}, [{s}, {self.num_expr(d + 1)}])".replace(
                "'", '"'
            )
        if c < 0.38:
            fn = self.pick(["trim", "trim_left", "trim_right", "trim_prefix", "trim_suffix"])
            return f"{fn}({s}, {self.word()})"
        if c < 0.42:
            return f"trim_space({s})"
        if c < 0.48:
            return f"replace({s}, {self.word()}, {self.word()})"
        if c < 0.52:
            return f"strings.replace_n({{{self.word()}: {self.word()}}}, {s})"
        if c < 0.58:
            return f"substring({s}, {self.num_expr(d + 1)}, {self.num_expr(d + 1)})"
        if c < 0.62:
            return f"format_int({self.num_expr(d + 1)}, {self.pick(['2', '8', '10', '16'])})"
        if c < 0.66:
            return f"json.marshal({self.any_expr(d + 1)})"
        if c < 0.7:
            return f"base64.encode({s})"
        if c < 0.73:
            return f"base64.decode({s})"
        if c < 0.76:
            return f"base64url.encode_no_pad({s})"
        if c < 0.8:
            return f"strings.reverse({s})"
        if c < 0.84:
            return f"type_name({self.any_expr(d + 1)})"
        if c < 0.88:
            return f"regex.replace({s}, {self.pick(REPLACE_PATS)}, {self.word()})"
        if c < 0.92:
            return f"object.get({self.obj_expr(d + 1)}, {self.word()}, {self.word()})"
        if c < 0.96:
            return f"hex.encode({s})"
        return f"crypto.sha256({s})"

    def str_arr(self, d: int) -> str:
        r = self.rng.random()
        if r < 0.3:
            return self.pick(["input.images", "input.tags", "input.empty", "[]"])
        if r < 0.5:
            return f"split({self.str_expr(d + 1)}, {self.pick(SEPS)})"
        if r < 0.6:
            return f"regex.split({self.pick(SPLIT_PATS)}, {self.str_expr(d + 1)})"
        if r < 0.7:
            return f"regex.find_n({self.pick(FIND_PATS)}, {self.str_expr(d + 1)}, {self.pick(['-1', '1', '2', '0'])})"
        return "[" + ", ".join(self.str_expr(d + 1) for _ in range(self.rng.randint(0, 3))) + "]"

    def obj_expr(self, d: int = 0) -> str:
        r = self.rng.random()
        if d > 2 or r < 0.35:
            return self.input_ref("obj")
        c = self.rng.random()
        if c < 0.3:
            items = ", ".join(
                f"{self.word()}: {self.scalar()}" for _ in range(self.rng.randint(0, 3))
            )
            return "{" + items + "}"
        if c < 0.45:
            return f"object.union({self.obj_expr(d + 1)}, {self.obj_expr(d + 1)})"
        if c < 0.55:
            return f"object.remove({self.obj_expr(d + 1)}, {self.str_arr(d + 1)})"
        if c < 0.65:
            return f"object.filter({self.obj_expr(d + 1)}, {self.str_arr(d + 1)})"
        if c < 0.75:
            if self.rng.random() < 0.5:
                return f"json.unmarshal(json.marshal({self.any_expr(d + 1)}))"
            return f"json.unmarshal({self.pick(RAW_JSON)})"
        if c < 0.85:
            return f"{{k: v | some k, v in {self.obj_expr(d + 1)}; {self.cond(d + 1, 'v')}}}"
        return f"{{v: k | some k, v in {self.obj_expr(d + 1)}; is_string(v)}}"

    def scalar(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.word()
        if r < 0.8:
            return self.num()
        return self.pick(["true", "false", "null"])

    def coll_expr(self, d: int = 0) -> str:
        r = self.rng.random()
        if d > 2 or r < 0.2:
            return self.input_ref(self.pick(["arr", "obj"]))
        c = self.rng.random()
        if c < 0.15:
            return "{" + ", ".join(self.scalar() for _ in range(self.rng.randint(1, 4))) + "}"
        if c < 0.3:
            return "[" + ", ".join(self.scalar() for _ in range(self.rng.randint(0, 4))) + "]"
        if c < 0.4:
            return f"[x | some x in {self.coll_expr(d + 1)}; {self.cond(d + 1, 'x')}]"
        if c < 0.5:
            return f"{{x | some x in {self.coll_expr(d + 1)}; {self.cond(d + 1, 'x')}}}"
        if c < 0.55:
            return f"{self.pick(['union', 'intersection'])}({{{self.coll_expr(d + 1)}, {self.coll_expr(d + 1)}}})"
        if c < 0.6:
            return f"({self.set_lit()} {self.pick(['|', '&', '-'])} {self.set_lit()})"
        if c < 0.67:
            return f"sort({self.coll_expr(d + 1)})"
        if c < 0.72:
            return f"array.slice({self.coll_expr(d + 1)}, {self.num_expr(d + 1)}, {self.num_expr(d + 1)})"
        if c < 0.76:
            return f"array.concat({self.coll_expr(d + 1)}, {self.coll_expr(d + 1)})"
        if c < 0.8:
            return f"array.reverse({self.coll_expr(d + 1)})"
        if c < 0.85:
            return self.str_arr(d + 1)
        if c < 0.88:
            return f"numbers.range({self.num_expr(d + 1)}, {self.num_expr(d + 1)})"
        if c < 0.92:
            return f"object.keys({self.obj_expr(d + 1)})"
        if c < 0.96:
            return f"indexof_n({self.str_expr(d + 1)}, {self.str_expr(d + 1)})"
        return self.obj_expr(d + 1)

    def set_lit(self) -> str:
        return "{" + ", ".join(self.scalar() for _ in range(self.rng.randint(1, 4))) + "}"

    def any_expr(self, d: int = 0) -> str:
        return self.pick([self.num_expr, self.str_expr, self.coll_expr, self.obj_expr])(d + 1)

    def cond(self, d: int = 0, var: str | None = None) -> str:
        c = self.rng.random()
        v = var or self.any_expr(d + 1)
        if c < 0.12:
            return f"{v} {self.pick(['==', '!=', '<', '<=', '>', '>='])} {self.any_expr(d + 1) if self.rng.random() < 0.5 else self.scalar()}"
        if c < 0.22:
            fn = self.pick(["startswith", "endswith", "contains"])
            return f"{fn}({v if var else self.str_expr(d + 1)}, {self.str_expr(d + 1)})"
        if c < 0.3:
            pat = self.pick(
                [
                    "`^[a-z]+$`",
                    "`^ghcr\\.io/`",
                    "`@sha256:[a-f0-9]+$`",
                    "`(?i)nginx`",
                    "`^v?\\d+\\.\\d+\\.\\d+$`",
                    "`[`",
                    '"^a.*"',
                    "`\\p{L}+`",
                ]
            )
            return f"regex.match({pat}, {v if var else self.str_expr(d + 1)})"
        if c < 0.37:
            pat = self.pick(GLOBS)
            delim = self.pick(GLOB_DELIMS)
            return f"glob.match({pat}, {delim}, {v if var else self.str_expr(d + 1)})"
        if c < 0.45:
            return f"{self.scalar()} in {self.coll_expr(d + 1)}"
        if c < 0.52:
            return f"not {self.cond(d + 1, var)}"
        if c < 0.58:
            return f"semver.is_valid({v if var else self.str_expr(d + 1)})"
        if c < 0.62:
            return f"semver.compare({self.str_expr(d + 1)}, {self.str_expr(d + 1)}) {self.pick(['==', '<', '>'])} 0"
        if c < 0.67:
            return f"net.cidr_contains({self.str_expr(d + 1)}, {self.str_expr(d + 1)})"
        if c < 0.72:
            return f"is_{self.pick(['string', 'number', 'array', 'set', 'object', 'boolean', 'null'])}({v})"
        if c < 0.8:
            return f"every y in {self.coll_expr(d + 1)} {{ {self.cond(d + 2, 'y')} }}"
        if c < 0.85:
            return f"some y in {self.coll_expr(d + 1)}; {self.cond(d + 2, 'y')}"
        if c < 0.9:
            return f"count({self.coll_expr(d + 1)}) {self.pick(['==', '>', '<'])} {self.num()}"
        if c < 0.95:
            return f"{self.num_expr(d + 1)} {self.pick(['==', '<', '>=', '!='])} {self.num_expr(d + 1)}"
        return f"{self.input_ref(self.pick(['num', 'str', 'arr', 'obj']))}"

    def order_rule(self, name: str) -> str:
        """A rule whose value shows the iteration order of a set or object built at run time."""
        c = self.rng.random()
        if c < 0.25:
            # The deny-message idiom: concat over a partial set.
            self.rules.append(
                f"{name}_p contains msg if {{\n\tsome x in {self.coll_expr()}\n\t"
                f"{self.cond(0, 'x')}\n\tmsg := {self.pick(MSGS)}\n}}"
            )
            return f'concat(", ", {name}_p)'
        if c < 0.4:
            words = ", ".join(self.str_expr(1) for _ in range(self.rng.randint(1, 4)))
            return f'concat("/", {{{words}}})'
        if c < 0.55:
            return f"[x | some x in {{y | some y in {self.coll_expr()}}}]"
        if c < 0.7:
            return f"[k | some k in object.keys({self.obj_expr()})]"
        if c < 0.8:
            return f"[v | v := {self.obj_expr()}[_]]"
        if c < 0.9:
            return f"[k | {self.obj_expr()}[k]]"
        return f"[x | {self.set_lit()}[x]]"

    # rules
    def rule(self, i: int) -> None:
        name = f"r{i}"
        if self.rng.random() < 0.15:
            self.rules.append(f"{name} := {self.order_rule(name)}")
            self.queryable.append(name)
            return
        c = self.rng.random()
        if c < 0.2:
            self.rules.append(f"{name} := {self.any_expr()}")
        elif c < 0.35:
            self.rules.append(f"{name} if {{\n\t{self.cond()}\n\t{self.cond()}\n}}")
        elif c < 0.45:
            dv = self.scalar()
            self.rules.append(
                f"default {name} := {dv}\n\n{name} := {self.any_expr()} if {{\n\t{self.cond()}\n}}"
            )
        elif c < 0.57:
            self.rules.append(
                f"{name} contains msg if {{\n\tsome x in {self.coll_expr()}\n\t{self.cond(0, 'x')}\n\tmsg := {self.pick(MSGS)}\n}}"
            )
        elif c < 0.65:
            self.rules.append(
                f"{name}[k] := v if {{\n\tsome k, v in {self.coll_expr()}\n\t{self.cond(0, 'v')}\n}}"
            )
        elif c < 0.75:
            f = f"f{i}"
            a = self.rng.random()
            if a < 0.4:
                self.rules.append(
                    f"{f}(x) := {self.scalar()} if {{\n\t{self.cond(0, 'x')}\n}} else := {self.scalar()}"
                )
            elif a < 0.7:
                self.rules.append(
                    f"{f}(x) := {self.scalar()} if {{\n\t{self.cond(0, 'x')}\n}}\n\n{f}(x) := {self.scalar()} if {{\n\t{self.cond(0, 'x')}\n}}"
                )
            else:
                self.rules.append(
                    f"{f}(x) := y if {{\n\ty := {self.pick(['x', 'count(x)', 'upper(x)', 'x + 1', 'x[0]'])}\n}}"
                )
            self.rules.append(f"{name} := {f}({self.any_expr()})")
        elif c < 0.82:
            other = f"r{self.rng.randrange(i)}" if i else "input"
            if i and self.rng.random() < 0.5:
                # `with` on data: replace an earlier rule of this package.
                target = f"data.{self.pkg}.r{self.rng.randrange(i)}"
                replaced = f"{target} as {self.scalar()}"
            else:
                replaced = f"input as {self.json_input_lit()}"
            self.rules.append(
                f"{name} := {self.pick(['x', '[x, y]', 'count(x)'])} if {{\n\tx := {other} with {replaced}\n\ty := 1\n}}"
            )
        elif c < 0.88:
            self.rules.append(f"{name} if not {self.cond()}")
        elif c < 0.94:
            self.rules.append(
                f"{name} := {self.pick(['[', '{'])}x | some x in {self.coll_expr()}; {self.cond(0, 'x')}{'}'}".replace(
                    "[x", "[x"
                ).replace("{x |", "{x |")
            )
            # fix bracket pairing
            if self.rules[-1].startswith(f"{name} := ["):
                self.rules[-1] = self.rules[-1][:-1] + "]"
        else:
            self.rules.append(
                f"{name} := {self.cond()}"
                if False
                else f"{name} := {self.num_expr()} {self.pick(['==', '<', '!='])} {self.num_expr()}"
            )
        self.queryable.append(name)

    def json_input_lit(self) -> str:
        return json.dumps(gen_input(self.rng))


def gen_input(rng: random.Random) -> dict[str, Any]:
    def w() -> str:
        if rng.random() < 0.01:
            return rng.choice(ODD_STRINGS)
        return rng.choice(WORDS)

    def n() -> Any:
        if rng.random() < 0.05:
            return rng.choice([2**53 + 1, 10**20, 1e300])
        return rng.choice([0, 1, -1, 2, 3, 10, 0.5, 2.5, -3.25, 1.0, 2**31, 2**53 - 1, 7, 1e-7])

    doc: dict[str, Any] = {
        "n": n(),
        "m": n(),
        "f": rng.choice([0.1, 0.2, 1.5, 1e-7, 3.0]),
        "big": rng.choice([2**40, 12345678901, 2**53 - 1, 2**63 if rng.random() < 0.1 else 2**32]),
        "name": w(),
        "image": w(),
        "ns": w(),
        "mem": rng.choice(["100Mi", "1Gi", "2G", "512Ki", "1.5Gi", "abc", "10"]),
        "images": [w() for _ in range(rng.randint(0, 3))],
        "nums": [n() for _ in range(rng.randint(0, 3))],
        "tags": [w() for _ in range(rng.randint(0, 3))],
        "empty": [],
        "labels": {w(): w() for _ in range(rng.randint(0, 3))},
        "limits": {"cpu": rng.choice(["500m", "1", "2"]), "memory": rng.choice(["1Gi", "100Mi"])},
        "meta": {"a": n(), "b": [n(), w()], "c": None, "d": rng.random() < 0.5},
    }
    return doc


def gen_case(seed: int, index: int) -> tuple[str, str, list[str], dict[str, Any]]:
    rng = random.Random(f"{seed}:{index}")
    pkg = f"fz.c{index}"
    g = Gen(rng, pkg)
    for i in range(rng.randint(1, 3)):
        g.rule(i)
    source = f"package {pkg}\n\n" + "\n\n".join(g.rules) + "\n"
    return pkg, source, g.queryable, gen_input(rng)


# Reduced builtin disagreements, written as compliance-format cases (answers
# from `opa eval`) to tests/fixtures/embedded_difffuzz/builtins.yaml, which
# scripts/probe_embedded.py --derive folds into embedded_unsupported.json.
BUILTIN_CASES: list[tuple[str, str, Any]] = [
    ("to_number/unit suffix", 'p := to_number("1.5Gi")', None),
    ("to_number/surrounding spaces", 'p := to_number(" 42 ")', None),
    ("to_number/two dots", 'p := to_number("10.1.2.3")', None),
    ("format_int/fraction in base 2", "p := format_int(0.1, 2)", None),
    ("format_int/negative in base 16", "p := format_int(-7, 16)", None),
    ("min/empty array compared", "p := 2.0 == min([])", None),
    ("max/empty array compared", "p := max(input.xs) != 1", {"xs": []}),
    ("round/past 2^63", "p := round(100000000000000000000.0)", None),
    ("floor/past 2^63", "p := floor(9223372036854775807.0)", None),
    ("floor/negative half", "p := floor(-0.5)", None),
    ("ceil/negative half", "p := ceil(-0.5)", None),
    ("indexof_n/empty search string", 'p := indexof_n(input.s, "")', {"s": "ab"}),
    ("base64.decode/missing padding", 'p := base64.decode("aGVsbG8")', None),
    ("abs/fraction", "p := abs(input.f)", {"f": -0.123456789}),
    ("abs/tiny", "p := abs(-1e-7)", None),
    ("json.marshal/hashed", "p := crypto.sha256(json.marshal(input.s))", {"s": "x-y"}),
    ("json.marshal/counted", 'p := count(json.marshal("ab"))', None),
    (
        "json.marshal_with_options/counted",
        'p := count(json.marshal_with_options("ab", {"pretty": true}))',
        None,
    ),
]


def write_builtin_cases(opa: str, path: Path) -> None:
    """Writes ``BUILTIN_CASES`` with the answers of ``opa eval --strict-builtin-errors``."""
    import tempfile

    import yaml

    out = []
    for note, body, inp in BUILTIN_CASES:
        module = f"package test\n\n{body}\n"
        with tempfile.TemporaryDirectory() as d:
            Path(d, "m.rego").write_text(module)
            args = [opa, "eval", "--strict-builtin-errors", "-f", "json", "-d", f"{d}/m.rego"]
            if inp is not None:
                Path(d, "in.json").write_text(json.dumps(inp))
                args += ["-i", f"{d}/in.json"]
            proc = subprocess.run(
                [*args, "data.test.p = x"], capture_output=True, text=True, check=False
            )
        case: dict[str, Any] = {"note": note, "modules": [module], "query": "data.test.p = x"}
        if inp is not None:
            case["input"] = inp
        doc = json.loads(proc.stdout)
        if proc.returncode != 0 or "errors" in doc:
            err = doc["errors"][0]
            case["want_error_code"] = err["code"]
            case["want_error"] = err["message"]
            case["strict_error"] = True
        else:
            case["want_result"] = [{"x": r["bindings"]["x"]} for r in doc.get("result", [])]
        out.append(case)

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def _str(dumper: yaml.SafeDumper, data: str) -> Any:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    header = (
        "# Cases beyond OPA's compliance suite where rego-cpp answers differently,\n"
        "# found by scripts/difffuzz_rego.py and reduced; in the compliance suite's format,\n"
        "# the expected answers captured from `opa eval --strict-builtin-errors` (OPA v1.22.2).\n"
        "# scripts/probe_embedded.py reads them as the suite `difffuzz`.\n"
    )
    body = yaml.dump({"cases": out}, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    path.write_text(header + body)


# -- engines ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Opa:
    """One ``opa run --server``; modules PUT and deleted per case."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.timeout = 5.0
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [binary, "run", "--server", "--addr", f"127.0.0.1:{self.port}", "--log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                self._req("GET", "/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("opa server did not start")

    def _req(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def put(self, name: str, source: str) -> str | None:
        code, doc = self._req("PUT", f"/v1/policies/{name}", source.encode())
        return None if code == 200 else json.dumps(doc)[:300]

    def delete(self, name: str) -> None:
        self._req("DELETE", f"/v1/policies/{name}")

    def query(self, path: str, inp: Any) -> dict[str, Any]:
        body = json.dumps({"input": inp}).encode()
        try:
            code, doc = self._req("POST", f"/v1/data/{path}?strict-builtin-errors=true", body)
        except TimeoutError:
            return {"error": "timeout"}
        if code != 200:
            return {"error": json.dumps(doc)[:300]}
        if "result" not in doc:
            return {"undefined": True}
        return {"value": doc["result"]}

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def embedded_answers(
    engine: Any, name: str, source: str, pkg: str, rules: list[str], inp: Any
) -> dict[str, dict[str, Any]]:
    from policysupply.errors import BundleError

    out: dict[str, dict[str, Any]] = {}
    try:
        prepared = engine.prepare({name: source}, {}, rego_versions={name: 1})
    except BundleError as exc:
        return {r: {"refused": f"{type(exc).__name__}: {exc}"[:300]} for r in rules}
    try:
        for r in rules:
            try:
                rs = prepared.query(f"data.{pkg}.{r}", inp)
            except BundleError as exc:
                out[r] = {"refused": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            if not rs:
                out[r] = {"undefined": True}
            else:
                out[r] = {"value": rs[0]["expressions"][0]["value"]}
    finally:
        prepared.close()
    return out


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values; a number's int/float kind is not compared (1 == 1.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/difffuzz.jsonl"))
    ap.add_argument(
        "--opa",
        default=os.environ.get("POLICYSUPPLY_OPA")
        or shutil.which("opa")
        or str(Path.home() / ".cache/policysupply/peers/bin/opa"),
    )
    ap.add_argument("--print", action="store_true", help="print the generated cases only")
    ap.add_argument(
        "--write-builtin-cases",
        type=Path,
        metavar="YAML",
        help="write BUILTIN_CASES with opa's answers (tests/fixtures/embedded_difffuzz/builtins.yaml)",
    )
    args = ap.parse_args()
    if args.write_builtin_cases:
        write_builtin_cases(args.opa, args.write_builtin_cases)
        return 0
    if args.print:
        for i in range(args.start, args.start + args.cases):
            pkg, source, rules, inp = gen_case(args.seed, i)
            print(f"# case {i} rules {rules}\n{source}# input {json.dumps(inp)}\n")
        return 0
    from policysupply._internal.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(timeout=10.0)
    opa = Opa(args.opa)
    stats: Counter[str] = Counter()
    t0 = time.monotonic()
    with args.out.open("w") as out:
        try:
            for i in range(args.start, args.start + args.cases):
                pkg, source, rules, inp = gen_case(args.seed, i)
                name = f"c{i}.rego"
                compile_error = opa.put(f"c{i}", source)
                emb = embedded_answers(engine, name, source, pkg, rules, inp)
                restarted = False
                for r in rules:
                    e = emb[r]
                    o = (
                        {"error": compile_error}
                        if compile_error
                        else opa.query(f"{pkg.replace('.', '/')}/{r}", inp)
                    )
                    if o.get("error") == "timeout" or restarted:
                        # The server is still busy: a fresh one for the next case
                        # (without this case's module: its other rules are skipped).
                        if not restarted:
                            opa.close()
                            opa = Opa(args.opa)
                            restarted = True
                        verdict = "opa_timeout"
                    elif "refused" in e:
                        verdict = "refused_both_fail" if "error" in o else "refused"
                    elif compile_error:
                        verdict = "DIFF_opa_compile_error"
                    elif "error" in o:
                        verdict = "DIFF_opa_error"
                    elif "undefined" in e or "undefined" in o:
                        verdict = (
                            "agree_undefined" if ("undefined" in e and "undefined" in o) else "DIFF"
                        )
                    else:
                        verdict = "agree" if same(e["value"], o["value"]) else "DIFF"
                    stats[verdict] += 1
                    if verdict.startswith("DIFF"):
                        row = {"case": i, "rule": r, "verdict": verdict, "source": source}
                        row.update(input=inp, embedded=e, opa=o)
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                if not compile_error and not restarted:
                    try:
                        opa.delete(f"c{i}")
                    except TimeoutError:
                        opa.close()
                        opa = Opa(args.opa)
                if (i - args.start) % 100 == 99:
                    print(i + 1, dict(stats), f"{time.monotonic() - t0:.0f}s", flush=True)
        finally:
            opa.close()
    print(json.dumps({"cases": args.cases, "rules": sum(stats.values()), **stats}))
    return 1 if any(k.startswith("DIFF") for k in stats) else 0


if __name__ == "__main__":
    sys.exit(main())
