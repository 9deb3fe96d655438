"""Which Debian kernel source an embedded tree takes, from the suites' package lists.

The madison text below is what `apt-cache madison linux-source-7.2 linux-source-7.3` printed on
2026-11-22 with the harness's own lists of unstable, testing and trixie-backports (see
fetch.update_source_lists); the rule must keep working as versions move, so the tests also
remove versions from it rather than depend on one point release."""

from __future__ import annotations

import pytest

from harness import fetch
from harness.errors import SetupError, UsageError
from harness.cache import Cache
from harness.proc import CommandLog

MADISON = """\
linux-source-7.2 |   7.2.13-1 | http://deb.debian.org/debian sid/main amd64 Packages
linux-source-7.2 |   7.2.12-1 | http://deb.debian.org/debian testing/main amd64 Packages
linux-source-7.2 | 7.2.12-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
linux-source-7.2 | 7.2.11-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
linux-source-7.2 | 7.2.9-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
linux-source-7.2 | 7.2.6-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
linux-source-7.3 | 7.3.4-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
"""
ERA = fetch.EMBEDDED_TREES["debian-7.2"]


def compare(a: str, b: str) -> int:
    return fetch._compare_versions(a, b, CommandLog())


def test_madison_lines_give_package_version_and_suite():
    offers = fetch.madison(MADISON)
    assert offers[0] == ("linux-source-7.2", "7.2.13-1", "unstable")  # sid is unstable
    assert offers[-1] == ("linux-source-7.3", "7.3.4-1~bpo13+1", "trixie-backports")
    assert len(offers) == 7


def test_the_newest_7_2_of_unstable_or_testing_is_taken():
    assert fetch.pick_kernel_source(fetch.madison(MADISON), ERA, compare) == ("linux-source-7.2", "7.2.13-1",
                                                                              "unstable")
    # unstable moved on to 7.3: testing's 7.2 is taken
    no_sid = [o for o in fetch.madison(MADISON) if o[2] != "unstable"]
    assert fetch.pick_kernel_source(no_sid, ERA, compare)[1:] == ("7.2.12-1", "testing")


def test_versions_are_ordered_as_dpkg_orders_them():
    # a string sort would put 7.2.9 after 7.2.13
    offers = [("linux-source-7.2", "7.2.9-1", "testing"), ("linux-source-7.2", "7.2.13-1", "testing")]
    assert fetch.pick_kernel_source(offers, ERA, compare)[1] == "7.2.13-1"


def test_when_7_2_leaves_unstable_and_testing_the_backports_7_2_then_the_newest_7_x_is_taken():
    only_bpo = [o for o in fetch.madison(MADISON) if o[2] == "trixie-backports"]
    # trixie-backports still builds 7.2: the 7.x port applies to it (not to 7.3, see the cover letter)
    assert fetch.pick_kernel_source(only_bpo, ERA, compare) == ("linux-source-7.2", "7.2.12-1~bpo13+1",
                                                                "trixie-backports")
    only_7_3 = [o for o in only_bpo if o[0] == "linux-source-7.3"]
    assert fetch.pick_kernel_source(only_7_3, ERA, compare) == ("linux-source-7.3", "7.3.4-1~bpo13+1",
                                                                "trixie-backports")


def test_nothing_offered_is_a_setup_error_that_says_what_was_seen():
    with pytest.raises(SetupError, match="no linux-source-7.2 in unstable, testing"):
        fetch.pick_kernel_source([("linux-source-6.12", "6.12.117-1", "unstable")], ERA, compare)


def test_an_unknown_tree_name_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="debian-6.12, debian-7.2"):
        fetch.linux_source(Cache(tmp_path), CommandLog(), "debian-5.10")


def test_a_cached_tarball_belongs_to_its_own_tree_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("linux-source-6.12.117-1_deb12u1.tar.xz", "linux-source-7.2.13-1.tar.xz"):
        (src / name).write_bytes(b"")
    cache = Cache(tmp_path)
    assert fetch.linux_source(cache, CommandLog(), "debian-6.12").deb_version == "6.12.117-1_deb12u1"
    assert fetch.linux_source(cache, CommandLog(), "debian-7.2").version == "7.2.13"


def test_the_newest_cached_guest_deb_is_taken_in_dpkg_order(tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    # a string sort puts +b10 before +b3, and 2.38.1-5+deb12u9 after 2.38.1-5+deb12u10
    names = ["busybox-static_1%3a1.35.0-4+b3_arm64.deb", "busybox-static_1%3a1.35.0-4+b10_arm64.deb",
             "util-linux_2.38.1-5+deb12u9_arm64.deb", "util-linux_2.38.1-5+deb12u10_arm64.deb",
             "libc6_2.36-9+deb12u10_arm64.deb"]
    for name in names:
        (debs / name).write_bytes(b"")
    got = fetch._cached_debs(Cache(tmp_path), ("busybox-static", "util-linux", "libc6"), "arm64", CommandLog())
    assert [p.name for p in got] == [names[1], names[3], names[4]]
    assert fetch.deb_version(got[0]) == "1:1.35.0-4+b10"
    assert fetch._cached_debs(Cache(tmp_path), ("dropbear-bin",), "arm64", CommandLog()) is None
