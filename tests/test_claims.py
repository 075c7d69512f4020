"""The claim inventory (tests/CLAIMS.md) names tests that exist, the mutation harness names
claims that exist, and the harness reports what it cannot plant instead of skipping it."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

CLAIMS = ROOT / "tests" / "CLAIMS.md"
ROW = re.compile(r"^\|\s*(C\d+)\s*\|(.*)\|\s*(\S+::\S+)\s*\|\s*$", re.MULTILINE)


def _rows() -> list[tuple[str, str, str]]:
    return [(m[1], m[2], m[3]) for m in ROW.finditer(CLAIMS.read_text())]


def _harness():
    spec = importlib.util.spec_from_file_location("mutations_run", ROOT / "tests/mutations/run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


def _test_functions(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
                "test_"):
            names.add(node.name)
    return names


def test_every_listed_test_id_exists():
    rows = _rows()
    table_lines = [line for line in CLAIMS.read_text().splitlines()
                   if re.match(r"^\|\s*C\d+\s*\|", line)]
    assert len(rows) == len(table_lines) >= 80, "a claim row without a file::test id"
    ids = [claim for claim, _, _ in rows]
    assert len(ids) == len(set(ids)), "duplicate claim ids"
    missing = []
    for claim, _, test_id in rows:
        file, function = test_id.split("::")
        path = ROOT / file
        if not path.exists() or not file.startswith("tests/") or function not in _test_functions(
                path):
            missing.append(f"{claim}: {test_id}")
    assert not missing, missing


def test_every_mutation_names_a_claim_of_the_inventory():
    harness = _harness()
    claims = {claim for claim, _, _ in _rows()}
    assert set(harness.claim_ids()) == claims
    unknown = [m.name for m in harness.MUTATIONS if m.claim not in claims]
    assert not unknown, unknown
    names = [m.name for m in harness.MUTATIONS]
    assert len(names) == len(set(names)), "duplicate mutation names"


def test_mutation_harness_reports_stale_lines_and_missing_test_files(tmp_path):
    harness = _harness()
    (tmp_path / "pkg").mkdir()
    target = tmp_path / "pkg" / "m.py"
    target.write_text("def f():\n    x = 1\n    return x\n")
    mutation = lambda original, tests=("tests/test_x.py",): harness.Mutation(
        "m", "pkg/m.py", original, "x = 2", tests, claim="C1")
    assert harness.apply(mutation("y = 1"), tmp_path).startswith("stale: original line found 0")
    assert harness.apply(harness.Mutation("m", "pkg/gone.py", "x", "y", ()),
                         tmp_path).startswith("stale")
    assert harness.missing_test_files(mutation("x = 1", ("tests/test_x.py", "-k", "a")),
                                      tmp_path) == ["tests/test_x.py"]
    assert harness.apply(mutation("x = 1"), tmp_path) is None
    assert target.read_text() == "def f():\n    x = 2\n    return x\n"  # indentation kept
    target.write_text("x = 1\nx = 1\n")
    assert harness.apply(mutation("x = 1"), tmp_path).startswith("stale: original line found 2")
    # A mutation counts as caught only by a test that passes unmutated.
    assert harness.verdict(1, {"t::a"}, 1, {"t::a"}).startswith("MISSED")
    assert harness.verdict(1, {"t::a", "t::b"}, 1, {"t::a"}) == "caught"
    assert harness.verdict(0, set(), 0, set()) == "MISSED"
    assert harness.failed_tests("FAILED tests/a.py::t[{'o': 'x'}-1] - AssertionError: y\n"
                                "ERROR tests/b.py\n") == ["tests/a.py::t[{'o': 'x'}-1]",
                                                           "tests/b.py"]


def test_slow_and_accelerator_tests_are_deselected_by_default():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/training/test_trainer.py"], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    collected = result.stdout
    assert "test_digits_run_learns_and_writes_results" in collected
    assert "test_default_config_reaches_the_readme_accuracy" not in collected
    assert re.search(r"\d+ deselected", collected)
