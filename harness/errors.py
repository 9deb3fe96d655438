"""Typed errors, one per pipeline failure, each carrying its exit code.

Stages raise these; :mod:`harness.cli` catches them at the boundary, prints
the message and exits with ``exit_code``.  The split follows tuxmake: user
errors (bad input, exit 2-4) versus failures of the thing under test
(build, boot, hang: exit 5-7).
"""

import errno

from harness.verdict import Verdict


class HarnessError(Exception):
    """Base class.  ``exit_code`` is the process exit status for this error."""

    exit_code = 1
    verdict = Verdict.ERROR


class UsageError(HarnessError):
    """Bad command line, configuration file or missing set-up (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or kconfig request is invalid (exit 2).

    The message names the file, and the key, line or symbol at fault.
    """


class KconfigMismatch(ConfigError):
    """Requested kconfig symbols did not survive ``olddefconfig`` on this tree (exit 2).

    A property of the tree at hand: ``git bisect`` treats it as a commit to skip (125)."""


class SetupError(UsageError):
    """A host tool or cached download is missing or failed (exit 2)."""


class SeriesError(HarnessError):
    """A patch series is malformed, incomplete or could not be fetched (exit 3)."""

    exit_code = 3


class FetchError(SeriesError):
    """A series could not be fetched from lore (b4 failed: no network, unknown id) (exit 3).

    The series may be fine: a matrix cell that needs it is SKIP, not ERROR."""


class ApplyError(HarnessError):
    """A patch did not apply (exit 4).  ``patch_index`` is the 1-based index of the patch
    that failed, when ``git am`` said which."""

    exit_code = 4

    def __init__(self, message: str, patch_index: int | None = None):
        super().__init__(message)
        self.patch_index = patch_index


class BuildError(HarnessError):
    """The kernel or a module failed to build (exit 5)."""

    exit_code = 5


class CommandTimeout(HarnessError):
    """A host command ran past its limit (harness/timeouts.py); it and every process it started
    were killed (exit 8)."""

    exit_code = 8


class Interrupted(HarnessError):
    """The harness was told to stop (SIGINT, SIGTERM, SIGHUP) and killed this step's command or
    guest, or refused to start one (exit 130)."""

    exit_code = 130


class InternalError(HarnessError):
    """A fault of the harness itself, not of its input or of the kernel under test (exit 10);
    the traceback is in the run's harness.log."""

    exit_code = 10


class BootError(HarnessError):
    """The guest did not reach its shell, or QEMU exited early (exit 6)."""

    exit_code = 6
    verdict = Verdict.ERROR


class ScenarioError(HarnessError):
    """A scenario's own guest command (binding a device, setting a module parameter) failed,
    so its cycle cannot say anything about the kernel (exit 1, verdict ERROR)."""

    exit_code = 1
    verdict = Verdict.ERROR


class GuestHang(HarnessError):
    """The guest stopped answering within a timeout (exit 7).

    ``console_log`` is the path of the kept console log, if any.
    """

    exit_code = 7
    verdict = Verdict.HANG

    def __init__(self, message: str, console_log: str | None = None):
        super().__init__(message)
        self.console_log = console_log


class GuestCrash(HarnessError):
    """The guest kernel crashed while a command was running: it panicked (``panic=-1`` with
    QEMU's ``-no-reboot`` ends QEMU), or an Oops left the shell without an answer (exit 1).

    A crash is a finding about the kernel, judged as FAIL; ``console_log`` keeps the
    evidence and the message quotes the panic or Oops text.
    """

    exit_code = 1
    verdict = Verdict.FAIL

    def __init__(self, message: str, console_log: str | None = None):
        super().__init__(message)
        self.console_log = console_log


class QemuKilled(GuestCrash):
    """QEMU was killed by a signal (not by the guest): nothing is known about the kernel
    (exit 6, as a guest that did not run; verdict ERROR)."""

    exit_code = 6
    verdict = Verdict.ERROR


class SshError(HarnessError):
    """SSH to the guest failed: no connection within its limit (harness/timeouts.py), a refused
    key, a command or SFTP transfer that broke off or ran past its limit (exit 11, verdict
    ERROR).  Inside a cycle it is not raised but judged: the ``net-traffic`` check FAILs."""

    exit_code = 11


class DiskFull(HarnessError):
    """The filesystem of the cache (or of a results directory) is full or nearly so (exit 9).
    Entries are written atomically (harness/cache.py), so nothing half-written is left to use."""

    exit_code = 9


def disk_full(e: OSError, where: str) -> DiskFull | None:
    """The :class:`DiskFull` for an ENOSPC/EDQUOT ``e`` met while writing under ``where``, else None."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return DiskFull(f"no space left on the filesystem of {where} ({e.filename or e.strerror}): free some "
                    f"space, or set HARNESS_CACHE to a larger filesystem (`harness doctor` shows what is "
                    f"free); entries being written were removed")
