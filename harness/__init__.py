"""virtio-pm-harness: build, boot and suspend/resume real kernels in QEMU.

The package is a one-way pipeline of stage modules (fetch, tree, kconfig,
build, rootfs, qemu, guest, suspend, dmesg, checks, report); only
:mod:`harness.cli` knows the whole chain.
"""

__version__ = "0.1.0"
