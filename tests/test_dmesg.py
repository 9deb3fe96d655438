"""Parser tests on real captures (tests/fixtures/linux-6.12.117, see its README).

Every expected value here was read off the capture files by hand
(``grep -n`` line numbers minus one give ``seq``).
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import CAPTURE, FIXTURES
from harness import cli, dmesg, parse_log

UNBOUND = "platform"
MMIO_BOUND = {"a003a00.virtio_mmio", "a003c00.virtio_mmio", "a003e00.virtio_mmio"}


def read(name: str) -> str:
    """The file exactly as captured (no universal-newline translation)."""
    return (CAPTURE / name).read_bytes().decode()


def parse(stem: str) -> dmesg.PmTimeline:
    return dmesg.parse(read(f"{stem}.dmesg"))


def test_s2idle_cycle_has_one_suspend_with_all_phases_in_kernel_order():
    tl = parse("s2idle-rtc-1")
    assert len(tl.transitions) == 1
    tr = tl.transitions[0]
    assert (tr.kind, tr.label, tr.pm_test, tr.wakeup_irq) == ("suspend", "s2idle", False, 20)
    assert [p.name for p in tr.phases] == list(dmesg.SUSPEND_PHASES)
    assert [p.name for p in tr.resume_phases] == ["resume_noirq", "resume_early", "resume"]
    assert tl.warnings == ()


def test_without_the_series_virtio_mmio_devices_resume_only_in_the_normal_phase():
    tr = parse("s2idle-rtc-1").transitions[0]
    noirq = tr.phase("resume_noirq")
    assert [(e.driver, e.device, e.callback) for e in noirq.events] == [
        ("pci", "0000:00:00.0", "pci_pm_resume_noirq"),
        ("virtio-pci", "0000:00:01.0", "pci_pm_resume_noirq"),
    ]
    resume = tr.phase("resume")
    bound = [e for e in resume.events if e.driver == "virtio-mmio"]
    assert {e.device for e in bound} == MMIO_BOUND
    assert {e.callback for e in bound} == {"platform_pm_resume"}
    unbound = [e for e in resume.events if e.driver == UNBOUND and e.device.endswith(".virtio_mmio")]
    assert len(unbound) == 29  # QEMU virt has 32 virtio-mmio slots, 3 are bound


def test_async_callbacks_are_paired_by_device_not_by_adjacency():
    # Lines 115-118: pci 0000:00:00.0 starts, virtio-pci starts and returns, then pci returns.
    noirq = parse("s2idle-rtc-1").transitions[0].phase("resume_noirq")
    pci, vpci = noirq.events
    assert (pci.seq, pci.end_seq, pci.rc, pci.usecs, pci.pid) == (114, 117, 0, 1702, 48)
    assert (vpci.seq, vpci.end_seq, vpci.usecs, vpci.pid) == (115, 116, 291, 24)
    assert pci.time == pytest.approx(4.592182)


def test_phase_boundaries_carry_position_and_duration():
    tr = parse("s2idle-rtc-1").transitions[0]
    assert (tr.phase("resume_noirq").end_seq, tr.phase("resume_noirq").msecs) == (118, 7.338)
    assert tr.phase("resume").end_seq == 215
    # 'start suspend of devices' is an aggregate line, not a phase
    assert "start_suspend" not in [p.name for p in tr.phases]


def test_pm_test_devices_has_no_late_or_noirq_phases():
    tr = parse("pm-test-devices").transitions[0]
    assert tr.pm_test
    assert [p.name for p in tr.phases] == ["suspend", "resume"]


def test_pm_test_platform_runs_the_noirq_phases():
    tr = parse("pm-test-platform").transitions[0]
    assert tr.pm_test and tr.wakeup_irq is None
    assert [p.name for p in tr.phases] == list(dmesg.SUSPEND_PHASES)


def test_refused_pm_test_level_gives_an_empty_transition():
    tl = parse("pm-test-processors-refused")
    assert [(t.kind, t.phases, t.end_seq) for t in tl.transitions] == [("suspend", (), 2)]


def test_hibernation_test_resume_runs_freeze_then_restore_phases():
    tr = parse("hibernate-test-resume").transitions[0]
    assert tr.kind == "hibernation"
    assert [p.name for p in tr.phases] == ["freeze", "freeze_late", "freeze_noirq",
                                          "restore_noirq", "restore_early", "restore"]
    restore = tr.phase("restore")
    assert {e.device for e in restore.events if e.driver == "virtio-mmio"} == MMIO_BOUND
    assert {e.callback for e in restore.events if e.driver == "virtio-mmio"} == {"platform_pm_restore"}


def _shape(tl: dmesg.PmTimeline):
    return [(t.kind, t.pm_test, [(p.name, [(e.driver, e.device, e.callback, e.rc) for e in p.events])
                                 for p in t.phases]) for t in tl.transitions]


def test_console_log_gives_the_same_transitions_as_the_per_cycle_dmesg():
    console = dmesg.parse(read("console.log"))
    per_cycle = []
    for stem in ("s2idle-rtc-1", "s2idle-rtc-2", "pm-test-platform", "pm-test-devices",
                 "pm-test-processors-refused", "hibernate-test-resume"):
        per_cycle += _shape(parse(stem))
    assert _shape(console) == per_cycle


def test_console_log_contains_carriage_returns_and_escapes_that_are_ignored():
    raw = read("console.log")
    assert "\r" in raw and "\x1b[6n" in raw  # what QEMU stdio and busybox ash really send
    assert all("\r" not in e.device for t in dmesg.parse(raw).transitions for p in t.phases for e in p.events)


def test_parse_json_has_the_documented_shape(capsys):
    assert cli.main(["parse", "--json", str(CAPTURE / "s2idle-rtc-1.dmesg")]) == 0
    doc = json.loads(capsys.readouterr().out)
    tr = doc["transitions"][0]
    assert tr["kind"] == "suspend"
    assert [p["name"] for p in tr["phases"]] == list(dmesg.SUSPEND_PHASES)
    event = tr["phases"][3]["events"][0]
    assert {k: event[k] for k in ("driver", "device", "callback", "module", "pid", "rc", "usecs", "seq")} == {
        "driver": "pci", "device": "0000:00:00.0", "callback": "pci_pm_resume_noirq", "module": None,
        "pid": 48, "rc": 0, "usecs": 1702, "seq": 114}
    assert tr["warnings"] == [] and doc["warnings"] == []


def test_the_panic_at_the_end_of_the_console_log_is_reported_outside_any_transition():
    tl = dmesg.parse(read("console.log"))
    assert [(w.kind, w.text) for w in tl.warnings] == [
        ("panic", "Kernel panic - not syncing: sysrq triggered crash")]
    assert all(t.warnings == () for t in tl.transitions)


def test_parse_of_missing_file_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["parse", str(tmp_path / "nope.log")]) == 2
    assert "nope.log" in capsys.readouterr().err


def test_every_problem_line_of_every_capture_is_found_past_the_word_filter():
    """The parser searches the problem patterns only on lines with one of PROBLEM_WORDS: each
    capture's problem lines, found by searching every pattern on every printk line, are all
    reported, of the same kind."""
    fixtures = CAPTURE.parent
    seen = 0
    for path in sorted(fixtures.glob("*/*.dmesg")) + sorted(fixtures.glob("*/console.log")):
        text = path.read_bytes().decode(errors="replace")
        want = []
        for seq, _, msg in dmesg.LineStream(text):
            kind = next((k for k, rx in dmesg.PROBLEMS if rx.search(msg)), None)
            if kind:
                want.append((seq, kind))
        got = [(w.seq, w.kind) for w in dmesg.parse(text).warnings]
        assert got == want, path
        seen += len(want)
    assert seen > 0


@pytest.mark.parametrize("line", [
    # the format strings of the kernel's reports (see dmesg.PROBLEMS for the source files)
    "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580",
    "BUG: scheduling while atomic: swapper/0/1/0x00000002",
    "WARNING: possible circular locking dependency detected",
    "WARNING: CPU: 0 PID: 1 at drivers/virtio/virtio.c:100 virtio_dev_remove+0x1c/0x2c",
    "Internal error: Oops: 0000000096000004 [#1] PREEMPT SMP",
    "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008",
    "kernel BUG at mm/slub.c:42!",
    "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b",
    "INFO: task sh:88 blocked for more than 120 seconds.",
    "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
])
def test_each_problem_format_passes_the_word_filter(line):
    timeline = dmesg.parse(f"[    1.000000] {line}\n")
    assert len(timeline.warnings) == 1 and timeline.warnings[0].text == line


def test_a_return_after_its_phase_ended_is_ignored_not_a_crash():
    log = "\n".join([
        "[    1.000000] PM: suspend entry (s2idle)",
        "[    1.100000] virtio-mmio a000000.virtio_mmio: PM: calling pm_generic_suspend @ 1, parent: platform",
        "[    1.200000] PM: suspend of devices complete after 0.100 msecs",
        "[    1.300000] virtio-mmio a000000.virtio_mmio: PM: pm_generic_suspend returned 0 after 3 usecs",
        "[    1.400000] PM: suspend exit",
    ])
    (tr,) = dmesg.parse(log).transitions
    (cb,) = tr.phase("suspend").events
    assert cb.rc is None and cb.end_seq is None


def test_the_line_stream_finds_what_the_timestamp_search_finds_line_by_line():
    """LineStream reads a whole log with one regex; it must give, for every real capture, the
    lines TIMESTAMP.search finds one line at a time (and never run into the next line)."""
    fixtures = CAPTURE.parent
    for path in sorted(fixtures.glob("*/*.dmesg")) + sorted(fixtures.glob("*/console.log")):
        text = path.read_bytes().decode(errors="replace")
        want = [(seq, float(m["ts"]), m["msg"].rstrip())
                for seq, line in enumerate(dmesg.strip_terminal(text).split("\n"))
                if (m := dmesg.TIMESTAMP.search(line))]
        stream = dmesg.LineStream(text)
        assert list(stream) == want, path
        assert len(stream) == len(text.split("\n"))
    assert list(dmesg.LineStream("[    1.000000]\nnext line\n[    2.000000] PM: suspend exit")) == [
        (0, 1.0, ""), (2, 2.0, "PM: suspend exit")]


@pytest.mark.parametrize("log, style, first", [
    # PRINTK_CALLER (kernel/printk/printk.c print_caller()), as on syzbot and Android kernels
    ("[ 1505.360127][T10711] s51xx 0000:01:00.0: PM: calling pci_pm_suspend @ 10711, parent: 0000:00:00.0",
     "printk", (0, 1505.360127, "s51xx 0000:01:00.0: PM: calling pci_pm_suspend @ 10711, parent: 0000:00:00.0")),
    ("[   12.000000][  T123] PM: suspend entry (s2idle)", "printk", (0, 12.0, "PM: suspend entry (s2idle)")),
    ("<6>[   12.000000] PM: suspend entry (s2idle)", "printk", (0, 12.0, "PM: suspend entry (s2idle)")),
    ("kern  :info  : [   61.010440] PM: suspend entry (s2idle)", "printk", (0, 61.01044, "PM: suspend entry (s2idle)")),
    ("[ 5655.287196,0] PM: Preparing system for mem sleep", "printk", (0, 5655.287196, "PM: Preparing system for mem sleep")),
    ("Feb 11 22:13:51 host-1 kernel: PM: suspend of devices complete after 1155.793 msecs", "journal",
     (0, 11 * 86400 + 22 * 3600 + 13 * 60 + 51.0, "PM: suspend of devices complete after 1155.793 msecs")),
    ("2026-12-01T12:00:01.5+0000 host kernel: PM: suspend exit", "journal", (0, 86400 + 12 * 3600 + 1.5, "PM: suspend exit")),
    ("[Mon Dec  1 12:00:00 2026] PM: suspend entry (deep)", "wallclock", (0, 86400 + 12 * 3600.0, "PM: suspend entry (deep)")),
    ("prompt# dmesg\nPM: suspend entry (s2idle)", "plain", (0, None, "prompt# dmesg")),
])
def test_the_line_prefixes_of_printk_variants_and_log_tools(log, style, first):
    stream = dmesg.LineStream(log)
    assert stream.style == style and next(iter(stream)) == first


def test_parse_json_written_a_transition_at_a_time_is_the_same_document():
    """`harness parse --json` streams json_chunks(); the text must be json.dumps(to_json())."""
    text = "".join(p.read_text(errors="replace") for p in sorted(CAPTURE.parent.glob("linux-6.12*/*.dmesg"))[:6])
    timeline = dmesg.parse(text)
    assert len(timeline.transitions) >= 2 and timeline.warnings is not None
    assert "".join(timeline.json_chunks()) == json.dumps(timeline.to_json())
    empty = dmesg.parse("no kernel lines here")
    assert "".join(empty.json_chunks()) == json.dumps(empty.to_json()) == '{"transitions": [], "warnings": []}'


def _pieces(text: str, size: int) -> list[str]:
    """``text`` cut at the first line end after every ``size`` characters."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


@pytest.mark.parametrize("size", [0, 50, 4096])
def test_a_log_in_pieces_parses_as_the_whole_log(size):
    """`harness parse` reads a file a piece at a time (a line whose wrapped continuation, or
    whose next kernel line, is in the next piece is read there): every capture, each log style
    and the console log with its untimed prompt lines, cut after every line (size 0) and at
    other line ends, gives the timeline of the whole text, line count included; so do the 6.12
    captures with their printk times cut off, as ``printk.time=0`` prints them."""
    logs = sorted(FIXTURES.glob("*/*.dmesg")) + sorted(FIXTURES.glob("*/console.log")) + sorted(
        (FIXTURES / "public").glob("*"))
    assert len(logs) > 50
    texts = [path.read_bytes().decode(errors="replace") for path in logs]
    texts += [re.sub(r"(?m)^\[ *\d+\.\d+\] ", "", t) for t in texts[:10]]
    styles = set()
    for n, text in enumerate(texts):
        whole = dmesg.parse(text)
        styles.add(dmesg.LineStream(text).style)
        assert dmesg.parse(_pieces(text, size)) == whole, logs[n % len(logs)]
    assert styles == {"printk", "journal", "plain"}


def test_harness_parse_reads_the_file_in_pieces_that_join_to_its_text(tmp_path, capsys):
    """LogPieces: pieces end at line ends, a UTF-8 character cut by a read comes out whole, a
    bad byte is replaced, "\\r\\r\\n" stays (what QEMU's stdio sends); and `harness parse --json`
    of the whole console log read 64 bytes at a time prints what its whole text gives."""
    raw = (CAPTURE / "console.log").read_bytes()
    head = raw[:raw.index(b"\n", 2000) + 1] + "caf\u00e9 ".encode() + b"\xff\r\r\n"
    path = tmp_path / "head.log"
    path.write_bytes(head)
    for size in (1, 2, 3, 64):
        pieces = list(parse_log.LogPieces(path, size=size))
        assert all(p.endswith("\n") for p in pieces)
        assert len(pieces) == head.count(b"\n") if size < 4 else 1 < len(pieces) < head.count(b"\n")
        assert "".join(pieces) == head.decode(errors="replace")
    assert "".join(pieces).endswith("caf\u00e9 \ufffd\r\r\n")
    path.write_bytes(raw)
    assert dmesg.parse(parse_log.LogPieces(path, size=64)) == dmesg.parse(raw.decode())
    assert cli.main(["parse", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == dmesg.parse(raw.decode()).to_json()


class _CountedPieces:
    """A log in pieces (one line each) that counts the pieces read by the current iteration."""

    def __init__(self, text: str):
        self.pieces, self.read = _pieces(text, 0), 0

    def __iter__(self):
        self.read = 0
        for piece in self.pieces:
            self.read += 1
            yield piece


def test_the_reader_yields_each_transition_once_its_end_is_read_not_at_the_log_end():
    """`harness parse` writes each transition as the parser ends it (TimelineReader): with the
    6.12 captures one after the other (six or more transitions), the first transition comes
    before a quarter of the lines are read, each at a line of its own, and the reader's transitions, problems and line count
    are parse()'s."""
    logs = sorted(CAPTURE.parent.glob("linux-6.12*/*.dmesg"))
    text = "".join(p.read_text(errors="replace") for p in logs)
    pieces = _CountedPieces(text)
    reader = dmesg.TimelineReader(pieces)
    with pytest.raises(RuntimeError):
        reader.warnings
    read_at = []
    transitions = []
    for t in reader:
        read_at.append(pieces.read)
        transitions.append(t)
    whole = dmesg.parse(text)
    assert len(transitions) == len(whole.transitions) >= 6
    assert read_at[0] < len(pieces.pieces) / 4 and read_at == sorted(set(read_at))
    assert dmesg.PmTimeline(tuple(transitions), reader.warnings, reader.lines) == whole


def test_harness_parse_of_an_unreadable_log_exits_2_naming_it_and_prints_no_half_json(tmp_path, capsys):
    missing = tmp_path / "gone.log"
    for json_flag in ([], ["--json"]):
        assert cli.main(["parse", *json_flag, str(missing)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and f"cannot read {missing}" in err
