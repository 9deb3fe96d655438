"""JUnit XML from saved results, for CI dashboards (Jenkins, GitLab, GitHub test reporters).

One ``<testsuite>`` per cell (revision x profile x scenario), one ``<testcase>`` per check
per cycle (``classname`` the cell, ``name`` ``check [scenario #k]``).  Verdicts map as
CI systems understand them: PASS and XFAIL pass (XFAIL with a ``verdict`` property),
FAIL and XPASS are ``<failure>``, ERROR and HANG are ``<error>``, SKIP is ``<skipped>``.
The failure text is the check's evidence lines.  A cell that ended before its cycles
(apply, build or boot failure, hang) gets one ``run`` testcase carrying that error.

Rendered from the ``results.json`` documents alone, so ``harness report`` can redo it.
Built with the standard library's ElementTree; the schema followed is the common
Ant/Jenkins one (testsuites > testsuite > properties, testcase > failure|error|skipped).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.verdict import Verdict

#: The JUnit element of a testcase for each verdict: a failure (the kernel is wrong), an error (it
#: could not be judged), skipped, or only its output (passed, or failed as expected).
ELEMENT = {Verdict.FAIL: "failure", Verdict.XPASS: "failure", Verdict.ERROR: "error", Verdict.HANG: "error",
           Verdict.SKIP: "skipped", Verdict.PASS: "system-out", Verdict.XFAIL: "system-out"}


def _testcase(suite: ET.Element, classname: str, name: str, verdict: Verdict, summary: str,
              evidence: list[str], seconds: float = 0.0) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")
    props = ET.SubElement(case, "properties")
    ET.SubElement(props, "property", name="verdict", value=verdict)
    element = ELEMENT[verdict]
    if element in ("failure", "error"):
        el = ET.SubElement(case, element, message=f"{verdict}: {summary}", type=verdict)
        el.text = "\n".join(evidence)
    elif element == "skipped":
        ET.SubElement(case, element, message=summary)
    else:
        out = ET.SubElement(case, element)
        out.text = "\n".join([f"{verdict}: {summary}", *evidence])


def render(results: list[dict]) -> str:
    """Return the JUnit XML document (a string) for ``results``, a list of results.json documents."""
    root = ET.Element("testsuites", name="virtio-pm-harness")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for doc in results:
        cell = doc.get("cell") or doc.get("command", "run")
        suite = ET.SubElement(root, "testsuite", name=cell, timestamp=doc.get("started") or "")
        props = ET.SubElement(suite, "properties")
        for key, value in (("verdict", doc.get("verdict")), ("defect", doc.get("defect")),
                           ("commit", (doc.get("tree") or {}).get("commit")),
                           ("tree", " ".join(x for x in ((doc.get("tree") or {}).get("name"),
                                                         (doc.get("tree") or {}).get("describe")) if x)),
                           ("kernel", (doc.get("versions") or {}).get("kernel")),
                           ("reproducer", doc.get("command"))):
            if value:
                ET.SubElement(props, "property", name=key, value=str(value))
        cases = []
        for cycle in doc.get("cycles", []):
            where = f"{cycle['scenario']} #{cycle['index']}"
            for ch in cycle["checks"]:
                cases.append((f"{ch['name']} [{where}]", Verdict(ch["verdict"]), ch["summary"], ch["evidence"],
                              cycle.get("seconds", 0.0) if ch["name"] == "state-write" else 0.0))
        if doc.get("skipped"):
            cases.append(("run", Verdict.SKIP, doc["skipped"], [], 0.0))
        if doc.get("error"):
            lines = doc["error"].split("\n")
            cases.append(("run", Verdict(doc.get("error_verdict") or Verdict.ERROR), lines[0], lines[1:], 0.0))
        for name, verdict, summary, evidence, seconds in cases:
            _testcase(suite, cell, name, verdict, summary, evidence, seconds)
        counts = {"tests": len(cases), "failures": sum(1 for c in cases if ELEMENT[c[1]] == "failure"),
                  "errors": sum(1 for c in cases if ELEMENT[c[1]] == "error"),
                  "skipped": sum(1 for c in cases if ELEMENT[c[1]] == "skipped")}
        for key, n in counts.items():
            suite.set(key, str(n))
            totals[key] += n
        suite.set("time", f"{sum((doc.get('timings') or {}).values()):.3f}")
    for key, n in totals.items():
        root.set(key, str(n))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
