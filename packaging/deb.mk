# Debian package targets, included by the top-level Makefile.
#   make deb        build dist/kbackupd_VERSION_ARCH.deb and check it with lintian
#   make deb-test   build it, install it in a Debian 12 container booted with systemd, and
#                   check the service end to end (needs root; caches the container tree
#                   in /var/cache/kbackup-deb-test)
.PHONY: deb deb-test

deb:
	packaging/build-deb.sh

deb-test:
	packaging/deb-test.sh
