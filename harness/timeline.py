"""The HTML report: per resume, a timeline in the style of sleepgraph (pm-graph).

For each cell and each shown cycle, the cycle's saved dmesg is parsed again and the
transition's resume phases are drawn as coloured bands; each device is a row and each
callback a bar at its printk time with its length (``usecs`` as printed); the provider
(the probe's virtio-mmio device), the other virtio-mmio devices and the consumer are
highlighted; failed checks are listed on the timeline and the first normal-phase callback
is marked when the ordering check failed.  A comparison section puts two revisions'
timelines for the same scenario and profile side by side on one time scale.

Rendered with jinja2 from ``templates/report.html.j2``: one self-contained file, inline
SVG and CSS, no network assets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness import checks, dmesg
from harness.lazy import lazy_import
from harness.verdict import Verdict

jinja2 = lazy_import("jinja2")

#: Colours per phase kind (suffix), as sleepgraph distinguishes them.
PHASE_COLOURS = {"noirq": "#c8e6ff", "early": "#dcefd0", "": "#fff1c4"}
_SHOWN_CYCLES = 3


@dataclass
class Bar:
    """One callback: ``start``/``length`` in milliseconds from the first resume callback."""

    phase: str
    callback: str
    start: float
    length: float
    rc: int | None
    seq: int


@dataclass
class Row:
    """One device's callbacks; ``role`` is provider, virtio-mmio, consumer or empty."""

    label: str
    role: str
    bars: list[Bar] = field(default_factory=list)


@dataclass
class Band:
    """A resume phase: ``start``/``end`` in milliseconds; ``colour``."""

    name: str
    start: float
    end: float
    colour: str


@dataclass
class Timeline:
    """One resume drawn: its title, total span in ms, phase bands, device rows, failed checks,
    and the time (ms) of the first normal-phase callback when the ordering check failed."""

    title: str
    span: float
    bands: list[Band]
    rows: list[Row]
    failed: list[dict]
    first_normal: float | None = None
    note: str = ""


def _ts(lines: list[str], seq: int | None) -> float | None:
    if seq is None or seq >= len(lines):
        return None
    m = dmesg.TIMESTAMP.search(lines[seq].replace("\r", ""))
    return float(m["ts"]) if m else None


def build_timeline(text: str, title: str, failed: list[dict]) -> Timeline:
    """Lay out the last transition of a cycle's dmesg ``text`` (the one the cycle is about).

    ``failed`` are the cycle's checks (results.json shape) whose verdict is not a pass."""
    tl = dmesg.parse(text)
    if not tl.transitions:
        return Timeline(title, 1.0, [], [], failed, note="no suspend or hibernation transition in the log")
    tr = tl.transitions[-1]
    lines = text.split("\n")
    phases = [p for p in tr.resume_phases if p.events]
    starts = [e.time for p in phases for e in p.events if e.time is not None]
    if not starts:
        return Timeline(title, 1.0, [], [], failed, note="no resume callbacks (pm_print_times off?)")
    t0 = min(starts)
    provider = checks.provider_device(tr)
    bands, rows, unbound = [], {}, Row("unbound virtio_mmio slots (platform_pm_*)", "")
    for p in phases:
        times = [(e.time - t0) * 1000 for e in p.events if e.time is not None]
        ends = [(e.time - t0) * 1000 + (e.usecs or 0) / 1000 for e in p.events if e.time is not None]
        end_ts = _ts(lines, p.end_seq)
        end = max(ends + ([(end_ts - t0) * 1000] if end_ts is not None else []))
        suffix = next((s for s in ("noirq", "early") if p.name.endswith(s)), "")
        bands.append(Band(p.name, min(times), end, PHASE_COLOURS[suffix]))
        for e in p.events:
            if e.time is None:
                continue
            bar = Bar(p.name, e.callback, (e.time - t0) * 1000, (e.usecs or 0) / 1000, e.rc, e.seq)
            if e.unbound_virtio_slot:
                unbound.bars.append(bar)
                continue
            role = ("provider" if e.device == provider else "virtio-mmio" if e.device.endswith(".virtio_mmio")
                    else "consumer" if e.device == "virtio_pm_consumer" else "")
            rows.setdefault(e.device, Row(f"{e.driver or '-'} {e.device}", role)).bars.append(bar)
    ordered = sorted(rows.values(), key=lambda r: min(b.start for b in r.bars))
    if unbound.bars:
        ordered.append(unbound)
    span = max(b.end for b in bands) or 1.0
    normal = tr.phase(dmesg.RESUME_PHASES[tr.kind].normal)
    first_normal = None
    if normal and normal.events and any(f["name"] == "noirq-before-normal" for f in failed):
        first_normal = (normal.events[0].time - t0) * 1000 if normal.events[0].time else None
    return Timeline(title, span, bands, ordered, failed, first_normal)


#: The verdicts whose check is marked on a cycle's timeline (everything but PASS and SKIP).
MARKED = frozenset(Verdict) - {Verdict.PASS, Verdict.SKIP}


def _cycle_timelines(cell_dir: Path, doc: dict) -> list[Timeline]:
    cycles = doc.get("cycles", [])
    bad = [c for c in cycles if c["verdict"] != Verdict.PASS]
    shown = (cycles[:_SHOWN_CYCLES] + [c for c in bad if c not in cycles[:_SHOWN_CYCLES]] +
             ([cycles[-1]] if cycles and cycles[-1] not in cycles[:_SHOWN_CYCLES] else []))
    out = []
    for c in shown:
        path = cell_dir / c["dmesg_file"]
        failed = [ch for ch in c["checks"] if ch["verdict"] in MARKED]
        title = f"{c['scenario']} #{c['index']}{' ' + c['step'] if c.get('step') else ''}: {c['verdict']}"
        text = path.read_bytes().decode(errors="replace") if path.is_file() else ""
        out.append(build_timeline(text, title, failed))
    return out


def render(cells: list[tuple[Path, dict]], title: str) -> str:
    """Return the HTML report for ``cells``: (cell directory, results.json document) pairs."""
    sections = []
    for cell_dir, doc in cells:
        sections.append({"doc": doc, "timelines": _cycle_timelines(cell_dir, doc)})
    by_key: dict[tuple[str, str], list[tuple[str, Timeline]]] = {}
    for s in sections:
        parts = (s["doc"].get("cell") or "").split("/")
        if len(parts) >= 3 and s["timelines"]:
            revision, profile, scenario = "/".join(parts[:-2]), parts[-2], parts[-1]
            by_key.setdefault((profile, scenario), []).append((revision, s["timelines"][-1]))
    compare = [{"profile": k[0], "scenario": k[1], "sides": v[:2], "span": max(t.span for _, t in v[:2])}
               for k, v in by_key.items() if len(v) >= 2]
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(title=title, sections=sections, compare=compare)
