"""Every case of the bad-input catalogue (bad_inputs.py) behaves as Testing/bad_input_catalogue.md says."""

from __future__ import annotations

import pytest

import bad_inputs

ROWS = bad_inputs.read_catalogue()


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=[c.id for c in bad_inputs.CASES])
def test_bad_input(case, tmp_path):
    outcome = bad_inputs.run_case(case, tmp_path)
    assert outcome.kind != "crashed"
    row = bad_inputs.table_row(case, outcome)
    assert ROWS.get(case.id) == row, (
        f"Testing/bad_input_catalogue.md is out of date for {case.id}; regenerate it with "
        f"'.venv/bin/python Testing/Python/bad_inputs.py'.\nnow:   {row}\ntable: {ROWS.get(case.id)}")


def test_catalogue_lists_exactly_the_cases_and_has_enough():
    ids = [c.id for c in bad_inputs.CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert set(ROWS) == set(ids), "regenerate Testing/bad_input_catalogue.md (cases added or removed)"
    assert len(ids) >= 60
    text = bad_inputs.CATALOGUE.read_text(encoding="utf-8")
    assert "; 0 uncaught exceptions; 0 silent garbage" in text


def test_every_accepted_or_warned_case_checks_its_result():
    unchecked = [c.id for c in bad_inputs.CASES if c.expect in ("accepted", "warned", "cancelled") and c.check is None]
    assert unchecked == [], "a run that completes must have its output checked (no silent garbage)"
