# Debian package targets, included by the top-level Makefile. One package per Debian release
# (bookworm = Debian 12, trixie = Debian 13); RELEASES="trixie" limits either target to some.
#   make deb        build dist/kbackupd_VERSION~debNN_ARCH.deb for each release, each in a clean
#                   cached tree of that release (/var/cache/kbackup-deb-build; needs root), and
#                   check them with that release's lintian and systemd-analyze
#                   (KBACKUP_BUILD_ON_HOST=1: the host's own release builds on the host)
#   make deb-test   build each, install it in a container of its release booted with systemd,
#                   and check the service end to end (needs root; caches the container trees
#                   in /var/cache/kbackup-deb-test)
.PHONY: deb deb-test

RELEASES ?=

deb:
	packaging/build-deb.sh $(RELEASES)

deb-test:
	packaging/deb-test.sh $(RELEASES)
