"""Every wait's limit, in seconds: one place for each, so that a guest, a subprocess and a
download can never wait for ever and a reader finds the number without searching.  A host
command past its limit is killed with its children and ends the run with
:class:`harness.errors.CommandTimeout` (exit 8).

The guest limits are defaults that the CLI (``--boot-timeout``, ``--cycle-timeout``), matrix
files (``boot_timeout``) and scenario files (``timeout``) override.
"""

#: From QEMU's start to the guest shell's first prompt (kernel boot + initramfs /init), under
#: TCG on a loaded 2-core machine; a boot measured here takes 5-15 s.
BOOT = 120.0

#: One suspend/resume cycle, from the arming command to the shell's prompt after resume; a
#: cycle that takes longer is a HANG (a cycle measured here takes 3-6 s, hibernation 15-30 s).
CYCLE = 90.0

#: An ordinary guest shell command (mount, echo into sysfs, cat).
GUEST_COMMAND = 30.0

#: After a kernel Oops on the console, how long the running guest command may still take before
#: the cycle ends as a crash with the Oops as evidence (an Oops in the shell's own context
#: kills the shell, so its end marker never comes; one in a kworker lets it finish).
OOPS_GRACE = 10.0

#: After "Kernel panic - not syncing" on the console, how long QEMU may take to exit
#: (``panic=-1`` reboots at once, ``-no-reboot`` turns that into QEMU's exit).
PANIC_GRACE = 10.0

#: After the guest shell printed a syntax error, how long the command may still take to end
#: (a script the command runs may print one and go on); past it the line was refused whole.
GUEST_SYNTAX_GRACE = 2.0

#: How long ``harness gc`` waits for the cache's sources lock before it says another harness is
#: running and removes nothing (``--wait`` waits as long as a build may take).
GC_LOCK_WAIT = 10.0

#: How long ``harness matrix --keep-alive`` keeps a cell's guest running after its cycles,
#: unless ``--keep-alive-seconds`` or Ctrl-C says otherwise.
KEEP_ALIVE = 600.0

#: A scenario step's ``before`` command (loading a module, writing a sysfs knob).
STEP_COMMAND = 60.0

#: A guest command that prints a whole log (``dmesg``, the ftrace buffer).
GUEST_DUMP = 60.0

#: A host tool asked for its version (``aarch64-linux-gnu-gcc --version``, ``qemu-system-aarch64 --version``).
TOOL_VERSION = 30.0

#: A query of apt's or dpkg's local state (``apt-get indextargets``, ``dpkg --compare-versions``).
APT_QUERY = 60.0

#: An apt operation on the network (``apt-get update`` of the harness's own lists, ``madison``,
#: a download) and a LAVA dispatcher validation.
APT_NETWORK = 120.0

#: A probe of a web server (``harness doctor`` asking lore.kernel.org for its front page).
NETWORK_PROBE = 10.0

#: SSH to the guest (harness/ssh.py) through QEMU's user-network ``hostfwd``.  The first connect
#: after boot may wait for dropbear, which /init starts after the shell is ready, and which makes
#: its host key at the first connection (``-R``): its whole window, retries included.
SSH_CONNECT = 60.0

#: SSH after a resume (the link is back or it is not): a new connection's whole window, retries
#: included, and each step of the ``net-traffic`` payload over the kept one (each takes under
#: 0.2 s when the link works).
SSH_RECONNECT = 20.0

#: One connection attempt: TCP connect, SSH banner, key exchange and key authentication under
#: TCG (measured: about 0.5 s).
SSH_ATTEMPT = 10.0

#: The pause between two connection attempts.
SSH_RETRY_INTERVAL = 0.5

#: A command over SSH (``sha256sum`` of the payload, ``dmesg > /tmp/x``, a tar of sysfs files).
SSH_COMMAND = 30.0

#: One SFTP transfer of the payload or a pulled file (1 MiB under TCG: about a second; the payload is 256 KiB).
SSH_TRANSFER = 60.0

#: ``b4 am`` fetching a thread from lore.
B4 = 300.0

#: Any host command without a limit of its own (git worktree add and reset of a kernel tree:
#: about 40 s on a loaded 2-core machine; tar of a linux-source tarball; gcc of a host tool).
COMMAND = 900.0

#: A kernel or module ``make``: a cold build takes 12-13 minutes on 2 loaded cores; override
#: with ``$HARNESS_BUILD_TIMEOUT`` (seconds) on a slower machine.
BUILD = 3600.0


def build(env: dict | None = None) -> float:
    """The limit of a ``make`` in seconds: ``$HARNESS_BUILD_TIMEOUT`` if set, else :data:`BUILD`."""
    import os
    value = (os.environ if env is None else env).get("HARNESS_BUILD_TIMEOUT")
    return float(value) if value else BUILD

