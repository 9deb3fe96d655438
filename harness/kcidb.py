"""KernelCI's KCIDB submission (schema v5.0) from saved results.

One checkout per (tree commit, patchset), one build per (checkout, kconfig, compiler),
one test per check per cycle with ``path`` ``pm.<check>`` under the cell's scenario
(``pm.s2idle_rtc.noirq_before_normal``; KCIDB paths allow ``[a-zA-Z0-9_-]`` and dots) and
one ``pm`` test per cell for a run that ended early.  Status maps: PASS -> PASS, FAIL and
XPASS -> FAIL, XFAIL -> PASS (with ``misc.verdict`` XFAIL: the expected outcome), ERROR and
HANG -> ERROR, SKIP -> SKIP, a cell that never reached its cycles -> MISS for its tests.

The schema (kcidb-io's ``kcidb_io.schema.V5_0``) defines ``patchset_hash`` as the sha256 of
the newline-terminated sha256 of each patch, which ``results.json`` records per run.
"""

from __future__ import annotations

import hashlib
import re

from harness.verdict import Verdict

#: The ``origin`` of everything submitted (KCIDB: ``^[a-z0-9_]+$``).
ORIGIN = "virtio_pm_harness"
#: KCIDB's test status for each verdict (an expected failure is the revision behaving as known).
STATUS = {Verdict.PASS: "PASS", Verdict.XFAIL: "PASS", Verdict.FAIL: "FAIL", Verdict.XPASS: "FAIL",
          Verdict.ERROR: "ERROR", Verdict.HANG: "ERROR", Verdict.SKIP: "SKIP"}
_LOG_MAX = 16384


def patchset_hash(patch_sha256s: list[str]) -> str:
    """KCIDB's ``patchset_hash``: the sha256 over each patch's sha256 (hex) followed by a
    newline, in series order; "" for no patches (a bare tree)."""
    if not patch_sha256s:
        return ""
    return hashlib.sha256("".join(h + "\n" for h in patch_sha256s).encode()).hexdigest()


def _path_part(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name).replace("-", "_")


def _id(*parts: str) -> str:
    return f"{ORIGIN}:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def render(results: list[dict]) -> dict:
    """Return a KCIDB v5.0 document (``version``, ``checkouts``, ``builds``, ``tests``) for
    ``results``, a list of results.json documents.  Validate with
    ``kcidb_io.schema.V5_0.validate(doc)``."""
    checkouts: dict[str, dict] = {}
    builds: dict[str, dict] = {}
    tests: list[dict] = []
    for doc in results:
        tree, series, build = doc.get("tree") or {}, doc.get("series") or {}, doc.get("build") or {}
        commit = tree.get("base") or ""
        patchset = series.get("patchset_hash", "")
        checkout_id = _id("checkout", commit, patchset)
        checkout = {"id": checkout_id, "origin": ORIGIN, "tree_name": tree.get("name") or ("debian-6.12" if tree.get("embedded")
                                                                             else "user-tree"), "patchset_hash": patchset, "valid": bool(tree.get("commit"))}
        if commit:
            checkout["git_commit_hash"] = commit
        if tree.get("describe"):
            checkout["git_commit_name"] = tree["describe"]
        msgid = series.get("cover_message_id") or next((p["message_id"] for p in series.get("patches", [])), None)
        if msgid:
            checkout["message_id"] = msgid.strip("<>")
        if doc.get("started"):
            checkout["start_time"] = doc["started"]
        checkout["misc"] = {"series_version": series.get("version"), "title": series.get("title")}
        checkouts.setdefault(checkout_id, checkout)
        config = ",".join(build.get("config") or [])
        build_id = _id("build", checkout_id, config, build.get("gcc_version") or "")
        entry = {"id": build_id, "checkout_id": checkout_id, "origin": ORIGIN, "architecture": "arm64",
                 "config_name": config or "default",
                 "status": "PASS" if build.get("image") else "SKIP" if doc.get("skipped") else "FAIL"}
        if build.get("gcc_version"):
            entry["compiler"] = build["gcc_version"]
        if build.get("seconds") is not None:
            entry["duration"] = float(build["seconds"])
        if not build.get("image") and doc.get("error"):
            entry["log_excerpt"] = doc["error"][:_LOG_MAX]
        builds.setdefault(build_id, entry)
        cell = doc.get("cell") or "run"
        env = {"comment": f"QEMU {doc.get('versions', {}).get('qemu', '?')}, profile {doc.get('profile')}",
               "misc": {"cell": cell, "defect": doc.get("defect")}}
        for position, cycle in enumerate(doc.get("cycles", [])):
            base = f"pm.{_path_part(cycle['scenario'])}"
            for ch in cycle["checks"]:
                tests.append({
                    "id": _id("test", build_id, cell, doc.get("started") or "", str(position), ch["name"]),
                    "build_id": build_id, "origin": ORIGIN, "path": f"{base}.{_path_part(ch['name'])}",
                    "status": STATUS[Verdict(ch["verdict"])],
                    "comment": ch["summary"], "environment": env,
                    "log_excerpt": "\n".join(ch["evidence"])[:_LOG_MAX],
                    "misc": {"verdict": ch["verdict"], "cell": cell, "cycle": cycle["index"]},
                })
        if doc.get("skipped"):
            tests.append({"id": _id("test", build_id, cell, doc.get("started") or "", "skip"), "build_id": build_id,
                          "origin": ORIGIN, "path": "pm", "status": STATUS[Verdict.SKIP], "comment": doc["skipped"][:1000],
                          "environment": env, "misc": {"verdict": Verdict.SKIP, "cell": cell}})
        if doc.get("error"):
            ended = Verdict(doc.get("error_verdict") or Verdict.ERROR)
            tests.append({"id": _id("test", build_id, cell, doc.get("started") or "", "run"), "build_id": build_id, "origin": ORIGIN,
                          "path": "pm", "status": "MISS" if not doc.get("cycles") and ended == Verdict.ERROR else
                          STATUS[ended],
                          "comment": doc["error"].split("\n")[0][:1000], "environment": env,
                          "log_excerpt": doc["error"][:_LOG_MAX], "misc": {"verdict": doc.get("verdict"),
                                                                          "cell": cell}})
    return {"version": {"major": 5, "minor": 0}, "checkouts": list(checkouts.values()),
            "builds": list(builds.values()), "tests": tests}
