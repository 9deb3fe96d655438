"""Parse the function graph tracer's output into call paths.

The guest limits the tracer to the virtio-mmio noirq callbacks
(:data:`harness.model.NOIRQ_TRACE_ROOTS`); this module turns the text of
``/sys/kernel/tracing/trace`` into :class:`GraphCall` values, each with the
path of calls that led to it, so a check can say *where* a function such as
``__might_sleep`` was reached from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: kernel/trace/trace_functions_graph.c print_graph_entry_*()/print_graph_return():
#: `` 1) + 12.345 us   |    name() {`` / ``|    name();`` / ``|    }`` / ``|    } /* name */``.
#: The CPU column, an optional overhead mark (+ ! # * @ $) and the duration come before ``|``.
GRAPH_LINE = re.compile(r"^\s*(?P<cpu>\d+)\)\s*(?P<rest>.*?)\|(?P<indent> *)(?P<call>\S.*)$")
_ENTRY = re.compile(r"^(?P<name>[\w.]+)\(\)\s*(?P<kind>\{|;)")
_DURATION = re.compile(r"(?P<value>\d+\.\d+) us")


@dataclass(frozen=True)
class GraphCall:
    """One function entry in the trace: ``name``, the ``path`` of open calls above it
    (outermost first), the ``cpu``, its duration in microseconds when the tracer printed
    one on the same line (leaf calls), and ``line``, the 0-based line number."""

    name: str
    path: tuple[str, ...]
    cpu: int
    usecs: float | None
    line: int

    @property
    def chain(self) -> str:
        """``root > ... > name``, for evidence."""
        return " > ".join(self.path + (self.name,))


def parse_graph(text: str) -> list[GraphCall]:
    """Return every function entry in function_graph ``text``, in order.

    Nesting is tracked per CPU from the ``{``/``}`` structure; the indentation
    is not trusted (the tracer resets it when a trace starts mid-call).  Lines
    that are not graph lines (headers, ``=> CPU change`` marks) are skipped.
    """
    stacks: dict[int, list[str]] = {}
    calls = []
    for n, raw in enumerate(text.replace("\r", "").split("\n")):
        m = GRAPH_LINE.match(raw)
        if not m:
            continue
        cpu, call = int(m["cpu"]), m["call"].strip()
        stack = stacks.setdefault(cpu, [])
        if call.startswith("}"):
            if stack:
                stack.pop()
            continue
        e = _ENTRY.match(call)
        if not e:
            continue
        d = _DURATION.search(m["rest"])
        calls.append(GraphCall(e["name"], tuple(stack), cpu, float(d["value"]) if d else None, n))
        if e["kind"] == "{":
            stack.append(e["name"])
    return calls
