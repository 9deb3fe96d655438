"""The report files of a run directory, rendered from its saved results: ``junit.xml``,
``kcidb.json`` and ``report.html`` (``harness run``/``matrix`` write them at the end, and
``harness report`` again for any saved run)."""

from __future__ import annotations

import json
from pathlib import Path

from harness import junit, kcidb, timeline
from harness.cache import atomic_write
from harness.lazy import lazy_import
from harness.results import load_results

kcidb_io = lazy_import("kcidb_io")


def write_reports(run_dir: Path, title: str | None = None) -> dict[str, Path]:
    """Render ``junit.xml``, ``kcidb.json`` (validated against KCIDB v5.0) and ``report.html``
    into ``run_dir`` from its saved results; return their paths by kind.  Atomic writes."""
    pairs = load_results(run_dir)
    docs = [doc for _, doc in pairs]
    kc = kcidb.render(docs)
    kcidb_io.schema.V5_0.validate(kc)
    return {
        "junit": atomic_write(run_dir / "junit.xml", junit.render(docs)),
        "kcidb": atomic_write(run_dir / "kcidb.json", json.dumps(kc, indent=2) + "\n"),
        "html": atomic_write(run_dir / "report.html",
                             timeline.render(pairs, title or f"virtio-pm-harness: {run_dir.name}")),
    }
