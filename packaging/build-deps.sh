#!/usr/bin/env bash
# Install the Debian packages that `make deb` (and, with --test, `make deb-test`; with --tree,
# a build in another release's tree) need.
# Quiet when everything is there; root installs, others are told (scripts/apt-install-missing.sh).
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
# Build-Depends of debian/control, plus the tools build-deb.sh itself runs.
for pkg in debhelper dh-virtualenv dpkg-dev python3-venv systemd lintian man-db rsync; do
    have "$pkg" || need+=("$pkg")
done
case "${1:-}" in
    --test | --tree)
        # A Debian tree of another release (debootstrap) to build in, or to boot under
        # systemd-nspawn for deb-test.sh.
        for pkg in debootstrap systemd-container systemd; do
            have "$pkg" || need+=("$pkg")
        done
        ;;
esac
exec "$(dirname "$0")/../scripts/apt-install-missing.sh" ${need[@]+"${need[@]}"}
