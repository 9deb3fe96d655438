"""The verdict enum and the one table per output format that maps it."""

from __future__ import annotations

import json
import re

import pytest

from harness import commands, junit, kcidb, terminal
from conftest import ROOT
from harness.verdict import BAD, Verdict, overall


@pytest.mark.parametrize("table", [junit.ELEMENT, kcidb.STATUS, commands.VERDICT_EXIT, terminal.STYLE],
                         ids=["junit", "kcidb", "exit", "terminal"])
def test_every_output_maps_every_verdict(table):
    assert set(table) == set(Verdict)


def test_the_html_report_styles_every_verdict():
    css = (ROOT / "harness" / "templates" / "report.html.j2").read_text()
    styled = set(re.findall(r"\.v-([A-Z]+)\b", css))
    assert styled == {v.value for v in Verdict}


def test_bad_verdicts_fail_the_exit_status_and_good_ones_do_not():
    assert {v for v in Verdict if commands.VERDICT_EXIT[v] != 0} == BAD
    assert commands.VERDICT_EXIT[Verdict.HANG] == 7


def test_a_verdict_is_its_name_in_json_and_reads_back_from_it():
    assert json.dumps({"verdict": Verdict.XFAIL}) == '{"verdict": "XFAIL"}'
    assert Verdict("HANG") is Verdict.HANG and f"{Verdict.PASS}" == "PASS"
    with pytest.raises(ValueError):
        Verdict("pass")


def test_overall_ranks_hang_error_fail_xpass_and_counts_skip_and_xfail_as_pass():
    assert overall([]) is Verdict.PASS
    assert overall(["SKIP", "XFAIL"]) is Verdict.PASS
    assert overall([Verdict.XPASS, Verdict.FAIL, Verdict.PASS]) is Verdict.FAIL
    assert overall(["FAIL", "ERROR"]) is Verdict.ERROR
    assert overall(["ERROR", "HANG", "XPASS"]) is Verdict.HANG
