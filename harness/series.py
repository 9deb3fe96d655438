"""Patch series revisions from an mbox, a directory of patches, or a lore message-id.

Parsing uses the standard library (:mod:`mailbox`, :mod:`email`); fetching
a message-id uses ``b4 am`` (the kernel community's tool for lore), whose
output (``NAME.mbx`` and ``NAME.cover``) is cached under
``$HARNESS_CACHE/series/``.  Every problem is a
:class:`~harness.errors.SeriesError` (exit 3) naming the file and patch.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import email.utils
import mailbox
import re
import shutil
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from harness import schemas, timeouts
from harness.cache import Cache, atomic_dir, content_key
from harness.config import load_document
from harness.errors import ConfigError, FetchError, SeriesError
from harness.proc import CommandLog, run, tail

#: ``[RFC PATCH v9 4/5] subject`` (Documentation/process/submitting-patches.rst, "The canonical patch format").
SUBJECT = re.compile(r"^\s*\[(?P<tags>[^\]]*\bPATCH\b[^\]]*)\]\s*(?P<subject>.*)$", re.I | re.S)
_VERSION = re.compile(r"\bv(\d+)\b", re.I)
_COUNTER = re.compile(r"\b(\d+)/(\d+)\b")
#: ``base-commit: <sha>`` trailer written by ``git format-patch --base`` and b4.
BASE_COMMIT = re.compile(r"^base-commit:\s*([0-9a-f]{7,40})\s*$", re.M)
#: Start of a diff in a patch mail.
_DIFF_START = re.compile(r"^(diff --git |--- a/|Index: )", re.M)
#: A message-id as given on a command line: ``<id@host>`` or ``id@host``.
MSGID = re.compile(r"^<?([^<>\s/]+@[^<>\s/]+)>?$")


@dataclass(frozen=True)
class Patch:
    """One mail of a series.

    ``index``/``total`` from ``n/N`` (1/1 when absent), ``version`` from ``vN``
    (1 when absent), ``subject`` without its bracketed prefix, ``body`` the
    commit message, ``diff`` from the first ``diff --git``, ``raw`` the whole
    mail as bytes (what ``git am`` is fed).
    """

    index: int
    total: int
    version: int
    rfc: bool
    prefix: str
    subject: str
    author: str
    date: str
    msgid: str
    in_reply_to: str | None
    body: str
    diff: str
    raw: bytes
    origin: str

    @property
    def diffstat(self) -> list[tuple[str, int, int]]:
        """``(file, added, removed)`` per file of :attr:`diff`."""
        stats: dict[str, list[int]] = {}
        current = None
        for line in self.diff.splitlines():
            if line == "-- ":  # mail signature after the last hunk
                break
            if line.startswith("diff --git "):
                current = line.split(" b/", 1)[-1]
                stats.setdefault(current, [0, 0])
            elif current and line.startswith("+") and not line.startswith("+++"):
                stats[current][0] += 1
            elif current and line.startswith("-") and not line.startswith("---"):
                stats[current][1] += 1
        return [(f, a, r) for f, (a, r) in stats.items()]


@dataclass(frozen=True)
class Series:
    """A revision: its ``version``, ``patches`` in index order, optional ``cover``
    letter (patch 0), the ``base_commit`` trailer if any, and where it came from."""

    version: int
    total: int
    patches: tuple[Patch, ...]
    cover: Patch | None
    base_commit: str | None
    source: str

    @property
    def title(self) -> str:
        return self.cover.subject if self.cover else self.patches[0].subject

    @property
    def digest(self) -> str:
        """A key over the patches' diffs and messages (what gets applied)."""
        return content_key(*(p.raw for p in self.patches))


def _decode_header(msg: EmailMessage, name: str) -> str:
    value = msg.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _body_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",)) if msg.is_multipart() else msg
    if part is None:
        return ""
    try:
        return part.get_content()
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", errors="replace")


def parse_mail(raw: bytes, origin: str) -> Patch | None:
    """Parse one mail; return None if its subject has no ``[PATCH ...]`` prefix."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    subject_line = _decode_header(msg, "Subject")
    m = SUBJECT.match(subject_line)
    if not m or subject_line.lower().startswith("re:"):
        return None
    tags = m["tags"]
    version = int(v[1]) if (v := _VERSION.search(tags)) else 1
    index, total = (int(c[1]), int(c[2])) if (c := _COUNTER.search(tags)) else (1, 1)
    text = _body_text(msg)
    d = _DIFF_START.search(text)
    body, diff = (text[: d.start()], text[d.start():]) if d else (text, "")
    return Patch(index=index, total=total, version=version, rfc=bool(re.search(r"\bRFC\b", tags, re.I)),
                 prefix=tags, subject=" ".join(m["subject"].split()), author=_decode_header(msg, "From"),
                 date=_decode_header(msg, "Date"), msgid=_decode_header(msg, "Message-ID").strip("<>"),
                 in_reply_to=_decode_header(msg, "In-Reply-To").strip("<>") or None,
                 body=body, diff=diff, raw=raw, origin=origin)


def _mbox_mails(path: Path) -> list[tuple[bytes, str]]:
    try:
        box = mailbox.mbox(str(path), create=False)
        mails = [(box.get_bytes(key), f"{path} (mail {n})") for n, key in enumerate(box.keys(), 1)]
    except (OSError, mailbox.Error) as e:
        raise SeriesError(f"{path}: cannot read as an mbox: {e}") from e
    if not mails:
        raise SeriesError(f"{path}: no mails found (not an mbox? it should start with a 'From ' line)")
    return mails


def assemble(mails: list[tuple[bytes, str]], source: str) -> Series:
    """Validate mails as one revision and return it; raises :class:`SeriesError`.

    Checks: every mail is a patch, one revision only, no duplicates, indices
    1..N complete, every numbered patch has a diff.
    """
    patches = []
    for raw, origin in mails:
        p = parse_mail(raw, origin)
        if p is None:
            subject = _decode_header(email.message_from_bytes(raw, policy=email.policy.default), "Subject")
            raise SeriesError(f"{origin}: not a patch mail (subject {subject!r} has no [PATCH ...] prefix). "
                              "Pass only the series' mails, e.g. the .mbx that `b4 am` writes.")
        patches.append(p)
    versions = sorted({p.version for p in patches})
    if len(versions) > 1:
        by_v = {v: [p.origin for p in patches if p.version == v][:2] for v in versions}
        raise SeriesError(f"{source}: mixes revisions {', '.join(f'v{v}' for v in versions)} "
                          f"(e.g. {by_v}); pass one revision (b4 am -v N)")
    totals = sorted({p.total for p in patches})
    if len(totals) > 1:
        raise SeriesError(f"{source}: patches disagree on the series length ({totals})")
    total = totals[0]
    seen: dict[int, Patch] = {}
    for p in patches:
        if p.index in seen:
            raise SeriesError(f"{source}: patch {p.index}/{total} appears twice "
                              f"({seen[p.index].origin} and {p.origin})")
        seen[p.index] = p
    missing = [i for i in range(1, total + 1) if i not in seen]
    if missing:
        raise SeriesError(f"{source}: v{versions[0]} is incomplete: missing patch(es) "
                          f"{', '.join(f'{i}/{total}' for i in missing)}")
    ordered = tuple(seen[i] for i in range(1, total + 1))
    for p in ordered:
        if not p.diff:
            raise SeriesError(f"{p.origin}: patch {p.index}/{total} {p.subject!r} has no diff")
    cover = seen.get(0)
    texts = [cover.body + cover.diff] if cover else []
    texts.append(ordered[-1].body + ordered[-1].diff)
    base = next((m[1] for t in texts if (m := BASE_COMMIT.search(t))), None)
    return Series(versions[0], total, ordered, cover, base, source)


def from_mbox(path: Path) -> Series:
    """Read a revision from an mbox file (with ``NAME.cover`` beside a b4 ``NAME.mbx``)."""
    mails = _mbox_mails(path)
    cover = path.with_suffix(".cover")
    if path.suffix == ".mbx" and cover.is_file():  # b4 writes the cover as one bare message
        mails = [(cover.read_bytes(), str(cover))] + mails
    return assemble(mails, str(path))


def from_directory(path: Path) -> Series:
    """Read a revision from a directory of ``git format-patch`` files (``*.patch``)."""
    files = sorted(path.glob("*.patch"))
    if not files:
        raise SeriesError(f"{path}: no *.patch files (expected `git format-patch` output)")
    return assemble([(f.read_bytes(), str(f)) for f in files], str(path))


def _b4_command() -> str:
    """The ``b4`` beside this Python (the venv's) or on PATH; raises :class:`SeriesError` if absent."""
    beside = Path(sys.executable).parent / "b4"
    found = str(beside) if beside.is_file() else shutil.which("b4")
    if not found:
        raise SeriesError("b4 is not installed; run `make setup` (it is a dependency of the venv)")
    return found


def fetch_msgid(msgid: str, cache: Cache, log: CommandLog, version: int | None = None,
                local_mbox: Path | None = None) -> Path:
    """Fetch a series with ``b4 am`` and return the cached ``.mbx`` path.

    ``local_mbox`` makes b4 read that mbox instead of lore (``b4 am -m``).
    Raises :class:`SeriesError` when b4 fails (no network, unknown id).
    """
    b4 = _b4_command()
    key = content_key(msgid, str(version), str(local_mbox.resolve()) if local_mbox else "lore")
    final = cache.root / "series" / key
    if (final / "series.mbx").is_file():
        return final / "series.mbx"
    with atomic_dir(final) as tmp:
        argv = [b4, "--offline-mode", "am", "-o", tmp, "-n", "series"] if local_mbox else \
            [b4, "am", "-o", tmp, "-n", "series"]
        if local_mbox:
            argv += ["-m", local_mbox]
        if version:
            argv += ["-v", str(version)]
        res = run([*argv, msgid], log, timeout=timeouts.B4)
        if res.returncode != 0 or not (tmp / "series.mbx").is_file():
            raise FetchError(
                f"b4 could not fetch {msgid}:\n{tail(res.output, 8)}\n"
                f"Without network access, download the thread by hand where you have it "
                f"(`b4 am -o . {msgid}`, or lore's /all/{msgid}/t.mbox.gz) and pass the .mbx file instead.")
    return final / "series.mbx"


def load(spec: str, cache: Cache, log: CommandLog, *, version: int | None = None,
         local_mbox: Path | None = None) -> Series:
    """Load a revision from ``spec``: an mbox file, a patch directory, or a message-id.

    Raises :class:`SeriesError` for anything that is none of these or fails validation.
    """
    path = Path(spec)
    if path.is_file():
        return from_mbox(path)
    if path.is_dir():
        return from_directory(path)
    if m := MSGID.match(spec):
        return from_mbox(fetch_msgid(m[1], cache, log, version, local_mbox))
    raise SeriesError(f"{spec!r} is neither an mbox file, a directory of patches, nor a message-id")


# --- Manifests: patches/<name>/series.yaml ----------------------------------------------

@dataclass(frozen=True)
class Manifest:
    """A revision described in ``patches/<name>/series.yaml``.

    ``subjects`` are the expected patch subjects in order; ``mbox`` is a local
    copy (relative paths resolved against the manifest) or None, in which case
    the series is fetched by ``message_id`` with b4; ``base`` is a commit or tag; ``tree`` the
    embedded tree it is written against (``debian-7.2``), used when no tree is given.
    """

    path: Path
    name: str
    title: str
    version: int
    message_id: str
    subjects: tuple[str, ...]
    patch_msgids: tuple[str | None, ...]
    base: str | None
    mbox: Path | None
    tree: str | None = None


def load_manifest(path: Path) -> Manifest:
    """Load a manifest, validated against :data:`harness.schemas.SERIES_MANIFEST` (and its ``tree``
    naming an embedded tree); raises :class:`~harness.errors.ConfigError` naming file, line and key."""
    doc = load_document(path, schemas.SERIES_MANIFEST)
    data = doc.data
    mbox = data.get("mbox")
    tree = data.get("tree")
    from harness.fetch import EMBEDDED_TREES  # fetch imports nothing of series: no cycle
    if tree is not None and tree not in EMBEDDED_TREES:
        raise ConfigError(f"{doc.where('tree')}: must name an embedded tree ({', '.join(EMBEDDED_TREES)}), "
                          f"got {tree!r}; a checkout of your own is given with --tree")
    return Manifest(path, data["name"], data["title"], data["version"], data["message_id"],
                    tuple(p["subject"] for p in data["patches"]),
                    tuple(p.get("message_id") for p in data["patches"]),
                    data.get("base"), (path.parent / mbox).resolve() if mbox else None, tree)


def check_against_manifest(series: Series, manifest: Manifest) -> None:
    """Raise :class:`SeriesError` if ``series`` is not the revision ``manifest`` describes."""
    problems = []
    if series.version != manifest.version:
        problems.append(f"version v{series.version}, expected v{manifest.version}")
    if series.total != len(manifest.subjects):
        problems.append(f"{series.total} patches, expected {len(manifest.subjects)}")
    for p, want, msgid in zip(series.patches, manifest.subjects, manifest.patch_msgids):
        if p.subject != want:
            problems.append(f"patch {p.index} is {p.subject!r}, expected {want!r}")
        if msgid and p.msgid != msgid:
            problems.append(f"patch {p.index} has Message-ID {p.msgid}, expected {msgid}")
    if problems:
        raise SeriesError(f"{series.source} does not match {manifest.path}: " + "; ".join(problems))


def stack_defect(base: Series, defect: Series, source: str) -> Series:
    """Return ``base`` with ``defect``'s patches appended (renumbered after the base's)."""
    total = base.total + defect.total
    patches = tuple(dataclasses.replace(p, index=i, total=total, version=base.version)
                    for i, p in enumerate(base.patches + defect.patches, 1))
    return Series(base.version, total, patches, base.cover, base.base_commit, source)


def defect_base(path: Path, on_top_of: str | dict[str, str], tree: str | None, where: str | None = None) -> Path:
    """The revision a defect goes on: ``on_top_of`` (validated by :data:`harness.schemas.DEFECT`) is
    a path relative to the defect's directory ``path``, or a mapping from embedded tree name to
    path, the backport of that tree; a tree that is not named (a user's checkout) takes the
    default tree's entry.  Raises ConfigError naming ``where`` (default: defect.yaml's on_top_of)
    when the mapping has no entry for the default tree."""
    from harness.fetch import DEFAULT_TREE  # fetch imports nothing of series: no cycle
    if isinstance(on_top_of, str):
        return path / on_top_of
    if DEFAULT_TREE not in on_top_of:
        where = where or f"{path / 'defect.yaml'}: on_top_of"
        raise ConfigError(f"{where}: has no entry for the default tree {DEFAULT_TREE} "
                          f"(it names {', '.join(on_top_of)})")
    return path / on_top_of.get(tree or DEFAULT_TREE, on_top_of[DEFAULT_TREE])


def load_revision(spec: str, cache: Cache, log: CommandLog, *, version: int | None = None,
                  local_mbox: Path | None = None, tree: str | None = None) -> tuple[Series, Manifest | None]:
    """Load ``spec``: a manifest directory (``patches/v9``), a defect directory
    (``patches/defects/NAME``: ``defect.yaml`` naming the revision it goes ``on_top_of``,
    per ``tree`` when it names one per tree, and its patch), or anything :func:`load` takes.

    A manifest's series comes from its ``mbox`` if set, else from b4 by its
    ``message_id``; either way it is checked against the manifest.
    """
    path = Path(spec)
    if (path / "defect.yaml").is_file():
        doc = load_document(path / "defect.yaml", schemas.DEFECT)
        base_dir = defect_base(path, doc.data["on_top_of"], tree, doc.where("on_top_of"))
        base, manifest = load_revision(str(base_dir), cache, log,
                                       version=version, local_mbox=local_mbox, tree=tree)
        return stack_defect(base, from_directory(path), str(path)), manifest
    if (path / "series.yaml").is_file():
        manifest = load_manifest(path / "series.yaml")
        if manifest.mbox:
            if not manifest.mbox.is_file():
                raise SeriesError(f"{manifest.path}: mbox {manifest.mbox} does not exist")
            series = from_mbox(manifest.mbox) if manifest.mbox.suffix != "" else from_directory(manifest.mbox)
        else:
            try:
                mbx = fetch_msgid(manifest.message_id, cache, log, version or manifest.version, local_mbox)
            except FetchError as e:
                raise FetchError(f"{e}\nOr set 'mbox:' in {manifest.path} to the downloaded file.") from None
            series = from_mbox(mbx)
        check_against_manifest(series, manifest)
        return series, manifest
    return load(spec, cache, log, version=version, local_mbox=local_mbox), None
