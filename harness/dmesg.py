"""Parse kernel log text into PM transitions, phases and device callbacks.

Input is plain ``dmesg`` output or a raw serial console log (carriage
returns, ANSI sequences, prompts and echoed commands are tolerated: only
lines carrying a ``[ seconds.micros]`` printk timestamp are read).

Events are ordered by their position in the input (``seq``, the 0-based
line number), never by timestamp: async suspend/resume interleaves the
callbacks of different devices, and adjacent timestamps were seen going
backwards.  A callback's ``calling`` and ``returned`` lines are paired by
driver, device and callback symbol.

A callback belongs to the phase whose boundary line (printed at the end of
each phase with ``pm_debug_messages``) follows it first.  Without boundary
lines the phase is inferred from the callback symbol's suffix.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

# --- Line formats, each with the kernel source that prints it (Linux 6.12) ---

#: printk time prefix (kernel/printk/printk.c print_time(): ``[%5lu.%06lu]``), anywhere in the
#: line (after ``dmesg -x``'s ``kern  :info  : ``, syslog's ``host kernel: ``); an optional syslog
#: level before it (``<6>``, ``dmesg -r``), an Android kernel's CPU after the seconds
#: (``[ 5603.909536,0]``), and the PRINTK_CALLER id after it (print_caller(): ``[T123]`` for a
#: task, ``[C1]`` for a CPU, padded to 6 characters: ``[  T123]``); some vendor kernels add
#: their own after it (``[2025:05:01 09:09:14][pid:916,cpu7,bash]``, seen on a CIX Sky1 6.1).
_PRINTK_PREFIX = (r"(?:<\d+>)?\[{ws}*(?P<ts>\d+\.\d+)(?:,\d+)?\](?:\[{ws}*[TC]\d+\])?{ws}?"
                  r"(?:\[\d{{4}}:\d\d:\d\d \d\d:\d\d:\d\d\])?(?:\[pid:\d+,cpu\d+,{other}*\])?")
TIMESTAMP = re.compile(_PRINTK_PREFIX.format(ws=r"\s", other=r"[^\]]") + r"(?P<msg>.*)$")
#: TIMESTAMP as it is searched in one line, applied to a whole log at once: the first
#: ``[ seconds]`` of a line, whitespace never crossing the line's end.
_PRINTK_LINE = re.compile(r"^[^\n]*?" + _PRINTK_PREFIX.format(ws=r"[^\S\n]", other=r"[^\]\n]")
                          + r"(?P<msg>[^\n]*)$", re.M)
#: A log without printk times: journalctl's and syslog's kernel lines (``Dec 01 12:00:00 host
#: kernel: msg``, month names of any locale, `` 5月 23 14:49:02``; ``-o short-precise`` fractions; ``-o short-iso``
#: ``2026-12-01T12:00:00+0000 host kernel: msg``).  Only the time of day is kept.
_JOURNAL_LINE = re.compile(r"^[^\S\n]*(?:\S+ +(?P<day>\d{1,2})|\d{4}-\d\d-(?P<iday>\d\d))[ T](?P<h>\d\d):(?P<m>\d\d):"
                           r"(?P<s>\d\d(?:\.\d+)?)\S* \S+ kernel: (?P<msg>[^\n]*)$", re.M)
#: ``dmesg -T``'s wall clock instead of printk times: ``[Mon Dec  1 12:00:00 2026] msg``.
_WALLCLOCK_LINE = re.compile(r"^\[\S+ \S+ +(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) \d{4}\][^\S\n]?"
                             r"(?P<msg>[^\n]*)$", re.M)
#: The timed log styles, in the order :class:`LineStream` prefers them, and their line patterns.
_STYLE_LINES = {"printk": _PRINTK_LINE, "journal": _JOURNAL_LINE, "wallclock": _WALLCLOCK_LINE}

#: drivers/base/power/main.c initcall_debug_start(), Linux 5.12 and later (and 5.10 stable):
#: dev_info(dev, "calling %ps @ %i, parent: %s\n", ...) with dev_fmt "PM: " (``%pS``, so
#: ``pci_pm_suspend+0x0/0x1b0``, before 6.10).  dev_info's prefix is "<driver> <device>: ",
#: with an empty driver when the device has no driver, bus or class (a leading space); a
#: driver string may hold spaces (``int3403 thermal INT3403:04``): the device is the last word.
CALLING = re.compile(
    r"^ ?(?:(?P<driver>.*?) )?(?P<device>\S+): PM: calling (?P<callback>[^\s\[]+)"
    r"(?: \[(?P<module>[^\]]+)\])? @ (?P<pid>\d+), parent: (?P<parent>\S+)")

#: drivers/base/power/main.c initcall_debug_report(), Linux 5.12 and later:
#: dev_info(dev, "%ps returned %d after %Ld usecs\n", ...) (usecs = nsecs >> 10 before 6.1).
RETURNED = re.compile(
    r"^ ?(?:(?P<driver>.*?) )?(?P<device>\S+): PM: (?P<callback>[^\s\[]+)"
    r"(?: \[(?P<module>[^\]]+)\])? returned (?P<rc>-?\d+) after (?P<usecs>\d+) usecs")

#: The same from Linux 4.19 to 5.11: dev_info(dev, "calling %pF @ %i, parent: %s\n", cb, ...)
#: (``%pS`` from 5.2) and "%pF returned %d after %Ld usecs\n", without "PM: ".
CALLING_NO_PM = re.compile(
    r"^ ?(?:(?P<driver>.*?) )?(?P<device>\S+): calling (?P<callback>[^\s\[]+\+0x[0-9a-f]+/0x[0-9a-f]+)"
    r"(?: \[(?P<module>[^\]]+)\])? @ (?P<pid>\d+), parent: (?P<parent>\S+)")
RETURNED_NO_PM = re.compile(
    r"^ ?(?:(?P<driver>.*?) )?(?P<device>\S+): (?P<callback>[^\s\[]+\+0x[0-9a-f]+/0x[0-9a-f]+)"
    r"(?: \[(?P<module>[^\]]+)\])? returned (?P<rc>-?\d+) after (?P<usecs>\d+) usecs")

#: Linux 3.x to 4.14: pr_info("calling  %s+ @ %i, parent: %s\n", dev_name(dev), ...) and
#: pr_info("call %s+ returned %d after %Ld usecs\n", dev_name(dev), ...): the device only, with
#: a "+" (no driver, no callback name: ``callback`` is None).
CALLING_LEGACY = re.compile(r"^calling  (?P<device>\S+)\+ @ (?P<pid>\d+), parent: (?P<parent>\S+)")
RETURNED_LEGACY = re.compile(r"^call (?P<device>\S+)\+ returned (?P<rc>-?\d+) after (?P<usecs>\d+) usecs")

#: Every era's callback start and end lines, as :func:`_unwrap` tries them.
_CALLBACK_FORMS = (CALLING, CALLING_NO_PM, CALLING_LEGACY, RETURNED, RETURNED_NO_PM, RETURNED_LEGACY)

#: ``sym+0x0/0x1b0`` as %pS/%pF print it: the symbol is what %ps prints today.
_SYMBOL_OFFSET = re.compile(r"\+0x[0-9a-f]+/0x[0-9a-f]+$")

#: drivers/base/power/main.c dpm_show_time(): pm_pr_dbg("%s%s%s of devices %s after %ld.%03ld msecs\n",
#: info, " ", pm_verb(event), "complete"/"aborted", ...).  ``start``/``end`` are aggregates.
BOUNDARY = re.compile(
    r"^PM: (?:(?P<info>noirq|late|early|start|end) )?(?P<verb>suspend|resume|freeze|quiesce|hibernate|"
    r"thaw|restore|recover|poweroff) of devices (?P<outcome>complete|aborted) after (?P<msecs>[\d.]+) msecs")

#: kernel/power/suspend.c pm_suspend(): "suspend entry (%s)" and "suspend exit".
SUSPEND_ENTRY = re.compile(r"^PM: suspend entry \((?P<label>[^)]+)\)")
SUSPEND_EXIT = re.compile(r"^PM: suspend exit")
#: kernel/power/hibernate.c hibernate(): "hibernation entry" / "hibernation exit".
HIBERNATE_ENTRY = re.compile(r"^PM: hibernation: hibernation entry")
HIBERNATE_EXIT = re.compile(r"^PM: hibernation: hibernation exit")
#: The start of a suspend in kernels without "suspend entry" (before about 4.14):
#: kernel/power/suspend.c enter_state() "PM: Syncing filesystems ... " (to 5.1) and
#: "PM: Preparing system for %s sleep" / "PM: Entering %s sleep" (the pm_states[] label).
LEGACY_SUSPEND_ENTRY = re.compile(r"^PM: (?:Syncing filesystems|(?:Preparing system for|Entering) (?P<label>\w+) sleep)")
#: The kernel saying a suspend failed: kernel/power/suspend.c suspend_devices_and_enter()
#: pr_err("Some devices failed to suspend, or early wake event detected"), "late suspend of
#: devices failed", "noirq suspend of devices failed"; drivers/base/power/main.c
#: dev_err(dev, "failed to suspend: error %d") with dev_fmt "PM: " (6.x: "<drv> <dev>: PM: ...");
#: kernel/power/process.c "Freezing of tasks failed/aborted after" and, from 6.2, "Freezing
#: <what> failed/aborted after".
SUSPEND_FAILED = re.compile(r"^(?:PM: (?:Some devices failed to suspend|late suspend of devices failed|"
                            r"noirq suspend of devices failed)|(?:.*: )?PM: failed to (?:suspend|freeze|quiesce)|"
                            r"Freezing (?:of tasks|user space processes|remaining freezable tasks) (?:failed|aborted) after)")
#: The end of such a suspend: kernel/power/process.c thaw_processes() "Restarting tasks ... done.".
LEGACY_SUSPEND_EXIT = re.compile(r"^Restarting tasks \.\.\. done\.")
#: kernel/power/suspend.c suspend_test(): "suspend debug: Waiting for %d second(s)."
PM_TEST = re.compile(r"^PM: suspend debug: Waiting for (?P<delay>\d+) second")
#: drivers/base/power/wakeup.c pm_system_irq_wakeup(): "Triggering wakeup from IRQ %d".
WAKEUP_IRQ = re.compile(r"^PM: Triggering wakeup from IRQ (?P<irq>\d+)")

#: guest-rootfs/modules/virtio_pm_probe/virtio_pm_probe.c: "virtio_pm_probe: <event> key=value ...".
PROBE = re.compile(r"^virtio_pm_probe: (?P<event>(?:consumer )?[a-z_]+)(?P<fields>(?: [a-z_]+=\S*)*)\s*$")

#: Kernel problem reports, by kind.  kernel/panic.c __warn(); kernel/sched/core.c
#: __might_resched(); arch/arm64/kernel/traps.c die(); kernel/locking/lockdep.c
#: print_*_bug(); kernel/hung_task.c; kernel/rcu/tree_stall.h.
PROBLEMS = (
    ("sleep_in_atomic", re.compile(r"BUG: sleeping function called from invalid context")),
    ("sleep_in_atomic", re.compile(r"BUG: scheduling while atomic")),
    ("lockdep", re.compile(r"WARNING: (possible (circular|recursive) locking|inconsistent lock state|"
                           r"possible irq lock inversion|suspicious RCU usage|bad unlock balance|"
                           r"lock held when returning|held lock freed)")),
    ("warn", re.compile(r"WARNING: CPU: \d+ PID: \d+ at ")),
    ("oops", re.compile(r"Internal error: Oops|Unable to handle kernel |Oops[: ]")),
    ("bug", re.compile(r"(?:^|\] )BUG: |kernel BUG at ")),
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("hung_task", re.compile(r"INFO: task .* blocked for more than")),
    ("rcu_stall", re.compile(r"rcu: INFO: .* detected stalls")),
)

#: Phase order within a transition, as dpm_* runs them (drivers/base/power/main.c).
SUSPEND_PHASES = ("suspend", "suspend_late", "suspend_noirq", "resume_noirq", "resume_early", "resume")
HIBERNATION_PHASES = ("freeze", "freeze_late", "freeze_noirq", "thaw_noirq", "thaw_early", "thaw",
                      "poweroff", "poweroff_late", "poweroff_noirq",
                      "restore_noirq", "restore_early", "restore", "recover_noirq", "recover_early", "recover")
class ResumePhases(NamedTuple):
    """The resume phases of one transition kind, in the order dpm_resume_noirq(),
    dpm_resume_early() and dpm_resume() run them (drivers/base/power/main.c)."""

    noirq: str
    early: str
    normal: str


#: Which phases are "resume" phases, per transition kind, in order.
RESUME_PHASES = {"suspend": ResumePhases("resume_noirq", "resume_early", "resume"),
                 "hibernation": ResumePhases("restore_noirq", "restore_early", "restore")}

_INFO_SUFFIX = {"noirq": "_noirq", "late": "_late", "early": "_early", None: ""}
_SYMBOL_SUFFIXES = ("_noirq", "_early", "_late")


@dataclass(frozen=True, slots=True)
class Callback:
    """One device PM callback.

    ``seq``/``end_seq`` are the input line numbers (0-based) of the
    ``calling``/``returned`` lines; ``time`` is the printk time in seconds of
    the ``calling`` line; ``usecs`` is what the kernel printed (nsecs >> 10);
    ``rc``/``usecs``/``end_seq`` are None when no ``returned`` line was seen.
    """

    driver: str | None
    device: str
    callback: str | None
    module: str | None
    pid: int
    parent: str
    rc: int | None
    usecs: int | None
    seq: int
    end_seq: int | None = None
    time: float | None = None

    @property
    def unbound_virtio_slot(self) -> bool:
        """A virtio-mmio slot with no device behind it: QEMU's DT lists 32, and the platform
        bus's own callbacks run for each (``platform a00xxxx.virtio_mmio: platform_pm_*``)."""
        return self.driver == "platform" and self.device.endswith(".virtio_mmio")


@dataclass(frozen=True, slots=True)
class ProbeEvent:
    """A line of the guest probe module: ``event`` (``restore_noirq``,
    ``consumer resume_early``...), its ``key=value`` ``fields``, ``seq``, and
    the ``phase`` whose boundary closed after it (None if none did)."""

    event: str
    fields: tuple[tuple[str, str], ...]
    seq: int
    phase: str | None = None

    def get(self, key: str) -> str | None:
        """The value of field ``key``, or None."""
        return next((v for k, v in self.fields if k == key), None)


@dataclass(frozen=True, slots=True)
class LogProblem:
    """A WARN/BUG/Oops/lockdep/... line: ``kind`` from :data:`PROBLEMS`, ``seq``, ``text``."""

    kind: str
    seq: int
    text: str


@dataclass(frozen=True)
class Phase:
    """A device PM phase (``resume_noirq``...) with its callbacks in log order.

    ``end_seq`` is the boundary line, ``msecs`` its duration as printed,
    ``aborted`` whether the kernel said ``aborted``; all None/False when the
    phase was inferred from callback names.
    """

    name: str
    events: tuple[Callback, ...]
    end_seq: int | None = None
    msecs: float | None = None
    aborted: bool = False


@dataclass(frozen=True)
class Transition:
    """One suspend or hibernation, from its entry line to its exit line.

    ``kind`` is ``suspend`` or ``hibernation``; ``label`` the sleep state
    (``s2idle``...); ``pm_test`` is True when a ``pm_test`` level cut it short; ``failed`` is
    the kernel's first line saying the transition failed (:data:`SUSPEND_FAILED`), else None.
    ``end_seq`` is None when the log has no exit line for it.
    """

    kind: str
    label: str | None
    start_seq: int
    end_seq: int | None
    phases: tuple[Phase, ...]
    warnings: tuple[LogProblem, ...]
    wakeup_irq: int | None = None
    pm_test: bool = False
    probe: tuple[ProbeEvent, ...] = ()
    failed: str | None = None

    def phase(self, name: str) -> Phase | None:
        """Return the phase called ``name``, or None."""
        return next((p for p in self.phases if p.name == name), None)

    @property
    def resume_phases(self) -> tuple[Phase, ...]:
        """The phases that bring devices back (resume_* or restore_*/thaw_*), in order."""
        return tuple(p for p in self.phases if p.name.split("_")[0] in ("resume", "restore", "thaw", "recover"))


@dataclass(frozen=True)
class PmTimeline:
    """Everything parsed from one log: transitions in order, all problems, and the line count."""

    transitions: tuple[Transition, ...]
    warnings: tuple[LogProblem, ...]
    lines: int

    def to_json(self) -> dict:
        """The stable JSON shape of ``harness parse --json`` (see the README)."""
        return {"transitions": [_transition_json(t) for t in self.transitions],
                "warnings": [_problem_json(w) for w in self.warnings]}

    def json_chunks(self):
        """``json.dumps(self.to_json())`` in pieces (an iterator of str), one transition at a time
        (:func:`json_chunks`)."""
        return json_chunks(self.transitions, lambda: self.warnings)


def json_chunks(transitions: Iterable[Transition], warnings: Callable[[], Iterable[LogProblem]]):
    """The text of :meth:`PmTimeline.to_json` in pieces (an iterator of str), one transition at a
    time, from ``transitions`` as they come (a :class:`TimelineReader`) and ``warnings()``, called
    after the last transition: the dicts of one transition exist at once, not those of the whole
    log (a 10 MB log's took about 40 MB).  Nothing is yielded before the first transition has
    been read (or the log has none), so that an unreadable log writes no half document."""
    transitions = iter(transitions)
    first = next(transitions, None)
    yield '{"transitions": ['
    if first is not None:
        yield json.dumps(_transition_json(first))
        for t in transitions:
            yield ", " + json.dumps(_transition_json(t))
    yield '], "warnings": ' + json.dumps([_problem_json(w) for w in warnings()]) + "}"


_CALLBACK_FIELDS = ("driver", "device", "callback", "module", "pid", "rc", "usecs", "seq", "end_seq", "time", "parent")


def _problem_json(w: LogProblem) -> dict:
    return {"seq": w.seq, "kind": w.kind, "text": w.text}


def _transition_json(t: Transition) -> dict:
    """One transition of :meth:`PmTimeline.to_json` (every callback field is a scalar: no
    asdict() deep copy per callback)."""
    return {
        "kind": t.kind, "label": t.label, "pm_test": t.pm_test, "wakeup_irq": t.wakeup_irq,
        "start_seq": t.start_seq, "end_seq": t.end_seq, "failed": t.failed,
        "phases": [{"name": p.name, "end_seq": p.end_seq, "msecs": p.msecs, "aborted": p.aborted,
                    "events": [{k: getattr(e, k) for k in _CALLBACK_FIELDS} for e in p.events]} for p in t.phases],
        "warnings": [_problem_json(w) for w in t.warnings],
        "probe": [{"seq": e.seq, "event": e.event, "phase": e.phase, "fields": dict(e.fields)} for e in t.probe],
    }


#: Terminal control sequences a serial console carries: CSI (ash's ``ESC[6n`` cursor query,
#: colours) and character-set selection (``ESC(B``).
_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


def strip_terminal(text: str) -> str:
    """Return console ``text`` without terminal control sequences and carriage returns."""
    return _TERMINAL_CONTROL.sub("", text).replace("\r", "")


def phase_from_symbol(callback: str | None, kind: str) -> str:
    """Guess a phase from a callback symbol (``pci_pm_resume_noirq`` -> ``resume_noirq``).

    Used only when the log has no phase boundary lines.
    """
    for verb in ("resume", "suspend", "freeze", "thaw", "restore", "poweroff"):
        if callback and verb in callback:
            for suffix in _SYMBOL_SUFFIXES:
                if callback.endswith(suffix):
                    return verb + suffix
            return verb
    return "resume" if kind == "suspend" else "restore"


#: Words one of which every :data:`PROBLEMS` pattern contains: a line with none of them (nearly
#: every line) is not searched with the patterns (tests/test_dmesg.py holds the two together).
PROBLEM_WORDS = ("BUG", "WARNING: ", "Oops", "Unable to handle kernel ", "Kernel panic", "INFO: ")
_PROBLEM_WORD = re.compile("|".join(map(re.escape, PROBLEM_WORDS)))
_problem_word = _PROBLEM_WORD.search


#: A device callback line, and how a whole one ends (", parent: <p>", "... usecs"): a line with
#: the first and not the second may have been wrapped by a mail client (:func:`_unwrap`).
_CALLBACK_WORDS = re.compile(r"calling |PM: |: PM:$|\+0x[0-9a-f]+/0x[0-9a-f]+| returned ")
_CALLBACK_END = re.compile(r", parent: \S+|usecs$|^PM: (?!calling)")


def _unwrap(msg: str, after: str) -> str:
    """``msg`` joined with the untimed line after it when that makes a whole callback line of
    some era (a mail client wrapped it: ``... PM: calling input_dev_suspend+0x0/0x50 @`` /
    ``2952, parent: card0``); else ``msg``."""
    follow = after.split("\n", 1)[0].strip()
    if not follow:
        return msg
    joined = f"{msg} {follow}"
    return joined if any(rx.match(joined) for rx in _CALLBACK_FORMS) else msg


class LineStream:
    """The kernel lines of a log, in order, as ``(seq, time, msg)``: ``seq`` the 0-based line
    number in the input, ``time`` in seconds (None when the log has none), ``msg`` the text
    after the prefixes.  ``style`` says how the log is written, decided once for the whole log:

    * ``printk``: lines with a printk time (:data:`TIMESTAMP`); lines without one (shell
      prompts, echoed commands, continuation lines) are skipped but counted;
    * ``journal``: journalctl or syslog (``host kernel: ``); the time of day, in seconds;
    * ``wallclock``: ``dmesg -T``; the time of day, in whole seconds;
    * ``plain``: no time at all (``printk.time=0``): every line is a kernel line, ordered by
      its position only.

    ``source`` is the log's text, or its text in pieces that each end at a line's end (the last
    may not): an iterable that can be iterated twice (the style is decided on the whole log
    first), which a caller that reads a file passes so that the log is never whole in memory;
    a line's continuation in the next piece is read there.  Terminal control sequences and
    carriage returns are dropped.  ``len()`` is the line count (of a log in pieces: once it
    has been iterated)."""

    def __init__(self, source: str | Iterable[str]):
        if isinstance(source, str):
            self._pieces: Iterable[str] = (strip_terminal(source),)
            self._lines: int | None = self._pieces[0].count("\n") + 1
        else:
            self._pieces, self._lines = _Stripped(source), None
        found = set()
        for piece in self._pieces:
            if _PRINTK_LINE.search(piece):
                found = {"printk"}
                break
            found |= {name for name, rx in (("journal", _JOURNAL_LINE), ("wallclock", _WALLCLOCK_LINE))
                      if name not in found and rx.search(piece)}
        self.style = next((name for name in _STYLE_LINES if name in found), "plain")

    def __len__(self) -> int:
        if self._lines is None:
            raise TypeError("the line count of a log in pieces is known once it has been iterated")
        return self._lines

    def __iter__(self):
        counting, newlines = self._lines is None, 0  # a whole text's lines were counted already
        carry = ""  # the text from the last line read on: its continuation may be in the next piece
        seq = 0  # the line number of carry's first line
        read = self._plain if self.style == "plain" else self._timed
        pieces = iter(self._pieces)
        piece = next(pieces, "")
        while piece is not None:
            if counting:
                newlines += piece.count("\n")
            following_piece = next(pieces, None)
            text = carry + piece if carry else piece
            carry, seq = yield from read(text, seq, following_piece is None)
            piece = following_piece
        if counting:
            self._lines = newlines + 1

    @staticmethod
    def _plain(text: str, seq: int, last: bool):
        """Yield the non-blank lines of ``text`` (starting at line ``seq``) but, unless it is the
        ``last`` piece, the part after its last line end; return (that part, its line number)."""
        lines = text.split("\n")
        rest = "" if last else lines.pop()  # a piece ends at a line's end: the empty start of the next
        for n, line in enumerate(lines, seq):
            if line.strip():
                yield n, None, line.rstrip()
        return rest, seq + len(lines)

    def _timed(self, text: str, seq: int, last: bool):
        """Yield the lines of ``text`` (starting at line ``seq``) but, unless it is the ``last``
        piece, its last kernel line; return (the text from that line on, its line number)."""
        style = self.style
        rx = _STYLE_LINES[style]
        count, words, ended = text.count, _CALLBACK_WORDS.search, _CALLBACK_END.search  # the hot loop's lookups
        pos = 0
        matches = rx.finditer(text)  # one pass in C over the piece
        m = next(matches, None)
        while m is not None:
            following = next(matches, None)
            start, stop = m.span()
            seq += count("\n", pos, start)
            pos = start
            if following is None and not last:
                return text[start:], seq
            if style == "printk":
                ts, msg = m.group("ts", "msg")
                ts = float(ts)
            else:
                ts = (int(m["day"] or m["iday"] if style == "journal" else m["day"]) * 86400
                      + int(m["h"]) * 3600 + int(m["m"]) * 60 + float(m["s"]))
                msg = m["msg"]
            msg = msg.rstrip()
            end = following.start() if following else len(text)
            if end > stop + 1 and words(msg) and not ended(msg):
                msg = _unwrap(msg, text[stop + 1:end])  # an untimed line follows: maybe a wrapped one
            yield seq, ts, msg
            m = following
        return "", seq + count("\n", pos)


class _Stripped:
    """``pieces`` without terminal control sequences and carriage returns, iterable again."""

    def __init__(self, pieces: Iterable[str]):
        self._pieces = pieces

    def __iter__(self):
        return (strip_terminal(piece) for piece in self._pieces)


class _Open:
    """The transition being read: its callbacks since the last phase boundary (``pending``,
    the fields of a ``calling`` line, made :class:`Callback` once at the boundary: a frozen
    dataclass costs about a microsecond to build), their returns (index in pending ->
    (rc, usecs, seq)), its finished phases, and the calls that have not returned yet
    (key -> index in pending)."""

    def __init__(self, kind: str, label: str | None, start_seq: int, legacy: bool = False):
        self.kind, self.label, self.start_seq, self.legacy = kind, label, start_seq, legacy
        self.pending: list[tuple] = []
        self.ends: dict[int, tuple[int, int, int]] = {}
        self.open_calls: dict[tuple[str | None, str, str], int] = {}
        self.phases: list[Phase] = []
        self.warnings: list[LogProblem] = []
        self.wakeup_irq: int | None = None
        self.pm_test = False
        self.probe_pending: list[ProbeEvent] = []
        self.probe: list[ProbeEvent] = []
        self.failed: str | None = None

    def _callbacks(self) -> list[Callback]:
        """The pending calls as :class:`Callback`, with their returns."""
        ends, none = self.ends, (None, None, None)
        return [Callback(d, dev, cb, mod, pid, parent, *ends.get(i, none)[:2], seq, ends.get(i, none)[2], ts)
                for i, (d, dev, cb, mod, pid, parent, seq, ts) in enumerate(self.pending)]

    def boundary(self, name: str, seq: int, msecs: float, aborted: bool) -> None:
        self.phases.append(Phase(name, tuple(self._callbacks()), seq, msecs, aborted))
        self.pending, self.ends, self.open_calls = [], {}, {}
        self.probe += [ProbeEvent(e.event, e.fields, e.seq, name) for e in self.probe_pending]
        self.probe_pending = []

    def close(self, end_seq: int | None) -> Transition:
        phases = list(self.phases)
        if self.pending:  # callbacks after the last boundary (no pm_debug_messages)
            by_phase: dict[str, list[Callback]] = {}
            for cb in self._callbacks():
                by_phase.setdefault(phase_from_symbol(cb.callback, self.kind), []).append(cb)
            phases += [Phase(name, tuple(evs)) for name, evs in by_phase.items()]
        return Transition(self.kind, self.label, self.start_seq, end_seq, tuple(phases),
                          tuple(self.warnings), self.wakeup_irq, self.pm_test,
                          tuple(self.probe + self.probe_pending), self.failed)


def _symbol(callback: str | None) -> str | None:
    """The callback's symbol without %pS's offset (``pci_pm_suspend+0x0/0x1b0`` -> ``pci_pm_suspend``)."""
    return _SYMBOL_OFFSET.sub("", callback) if callback and "+0x" in callback else callback


class _Parser:
    """Reads a :class:`LineStream` once: each line goes to the first handler whose format it
    matches.  Linear in the input: no handler looks back."""

    def __init__(self):
        self.transitions: list[Transition] = []
        self.problems: list[LogProblem] = []
        self.current: _Open | None = None

    def _start(self, kind: str, label: str | None, seq: int) -> None:
        if self.current:
            self.transitions.append(self.current.close(None))
        self.current = _Open(kind, label, seq)

    def _open(self, kind: str, seq: int) -> _Open:
        """The current transition, or one opened here: the log starts inside a transition."""
        if self.current is None:
            self.current = _Open(kind, None, seq)
        return self.current

    def problem(self, seq: int, msg: str) -> None:
        if kind := next((kind for kind, rx in PROBLEMS if rx.search(msg)), None):
            problem = LogProblem(kind, seq, msg)
            self.problems.append(problem)
            if self.current:
                self.current.warnings.append(problem)

    def line(self, seq: int, ts: float | None, msg: str) -> None:
        if _problem_word(msg):  # here, not in problem(): a call per line costs 2 % of a parse
            self.problem(seq, msg)
        if self.current and self.current.failed is None and ("failed" in msg or "aborted" in msg) \
                and SUSPEND_FAILED.match(msg):
            self.current.failed = msg
        if msg.startswith("PM: "):
            self.pm_core_line(seq, msg)
        elif self.current and self.current.legacy and LEGACY_SUSPEND_EXIT.match(msg):
            self.transitions.append(self.current.close(seq))
            self.current = None
        elif msg.startswith("virtio_pm_probe: "):
            if self.current and (m := PROBE.match(msg)):
                fields = tuple(tuple(f.split("=", 1)) for f in m["fields"].split())
                self.current.probe_pending.append(ProbeEvent(m["event"], fields, seq))
        elif "calling " in msg:
            self.calling(seq, ts, msg)
        elif " returned " in msg:
            self.returned(seq, msg)

    def calling(self, seq: int, ts: float | None, msg: str) -> None:
        """A device callback starts: the line of any era's initcall_debug_start()."""
        if m := CALLING.match(msg) or CALLING_NO_PM.match(msg):
            driver, device, callback, module, parent = m.group("driver", "device", "callback", "module", "parent")
            callback = _symbol(callback)
        elif m := CALLING_LEGACY.match(msg):
            driver = callback = module = None
            device, parent = m.group("device", "parent")
        else:
            return
        intern = sys.intern  # the same few hundred names recur in every cycle: one copy of each
        driver, device, callback = driver and intern(driver), intern(device), callback and intern(callback)
        cur = self._open("hibernation" if callback and "freeze" in callback else "suspend", seq)
        cur.open_calls[(driver, device, callback)] = len(cur.pending)  # inlined: half the lines come here
        cur.pending.append((driver, device, callback, module, int(m["pid"]), intern(parent), seq, ts))

    def returned(self, seq: int, msg: str) -> None:
        """A device callback ends: the line of any era's initcall_debug_report()."""
        if not self.current:
            return
        if m := RETURNED.match(msg) or RETURNED_NO_PM.match(msg):
            key = (m["driver"], m["device"], _symbol(m["callback"]))
        elif m := RETURNED_LEGACY.match(msg):
            key = (None, m["device"], None)
        else:
            return
        cur = self.current  # a return without its call (or from before the last boundary): ignored
        i = cur.open_calls.pop(key, None)
        if i is not None:
            cur.ends[i] = (int(m["rc"]), int(m["usecs"]), seq)

    def pm_core_line(self, seq: int, msg: str) -> None:
        """A line of the PM core itself (``PM: ...``): transition entry and exit, phase
        boundaries, the wake IRQ, pm_test's wait."""
        cur = self.current
        if m := SUSPEND_ENTRY.match(msg):
            self._start("suspend", m["label"], seq)
        elif (m := LEGACY_SUSPEND_ENTRY.match(msg)) and (cur is None or cur.legacy):
            if cur is None:  # "Syncing filesystems", then "Preparing system for mem sleep": one suspend
                self.current = _Open("suspend", m["label"], seq, legacy=True)
            elif cur.label is None:
                cur.label = m["label"]
        elif HIBERNATE_ENTRY.match(msg):
            self._start("hibernation", None, seq)
        elif cur and (SUSPEND_EXIT.match(msg) or HIBERNATE_EXIT.match(msg)):
            self.transitions.append(cur.close(seq))
            self.current = None
        elif m := BOUNDARY.match(msg):
            if m["info"] not in ("start", "end"):
                kind = "hibernation" if m["verb"] in ("freeze", "thaw", "restore", "poweroff") else "suspend"
                self._open(kind, seq).boundary(m["verb"] + _INFO_SUFFIX[m["info"]], seq, float(m["msecs"]),
                                               m["outcome"] == "aborted")
        elif cur and (m := WAKEUP_IRQ.match(msg)):
            cur.wakeup_irq = int(m["irq"])
        elif cur and PM_TEST.match(msg):
            cur.pm_test = True


class TimelineReader:
    """The transitions of a log, each yielded once, as soon as the line that ends it is read
    (its exit line, the next transition's entry line, or the log's end), and not kept: a caller
    that writes each out (``harness parse``) holds one transition at a time, not the whole log's
    (about 1.4 MB per MB of log).  ``text`` is as for :func:`parse`.  Once iterated,
    ``warnings`` holds every problem line of the log (:class:`LogProblem`, in order) and
    ``lines`` its line count; before that both raise RuntimeError.  Iterating again parses again."""

    def __init__(self, text: str | Iterable[str]):
        self._text = text
        self._warnings: tuple[LogProblem, ...] | None = None
        self._lines: int | None = None

    @property
    def warnings(self) -> tuple[LogProblem, ...]:
        if self._warnings is None:
            raise RuntimeError("a log's problems are known once its transitions have been read")
        return self._warnings

    @property
    def lines(self) -> int:
        if self._lines is None:
            raise RuntimeError("a log's line count is known once its transitions have been read")
        return self._lines

    def __iter__(self) -> Iterator[Transition]:
        lines = LineStream(self._text)
        parser = _Parser()
        line, ended = parser.line, parser.transitions
        for seq, ts, msg in lines:
            line(seq, ts, msg)
            if ended:
                yield from ended
                ended.clear()
        if parser.current:
            ended.append(parser.current.close(None))
        yield from ended
        ended.clear()
        self._warnings, self._lines = tuple(parser.problems), len(lines)


def parse(text: str | Iterable[str]) -> PmTimeline:
    """Parse a log into a :class:`PmTimeline`, in one pass (time linear in the input): ``text``
    whole, or in pieces that end at a line's end, iterable twice (:class:`LineStream`: a
    caller reading a file a piece at a time never holds it whole; :class:`TimelineReader`
    yields the transitions without keeping them).  Never raises on odd input."""
    reader = TimelineReader(text)
    transitions = tuple(reader)
    return PmTimeline(transitions, reader.warnings, reader.lines)
