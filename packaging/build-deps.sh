#!/usr/bin/env bash
# Install the Debian packages that `make deb` (and, with --test, `make deb-test`) need.
# Quiet when everything is there; root installs, others are told (scripts/apt-install-missing.sh).
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
# Build-Depends of debian/control, plus the tools build-deb.sh itself runs.
for pkg in debhelper dh-virtualenv dpkg-dev python3-venv lintian man-db; do
    have "$pkg" || need+=("$pkg")
done
if [ "${1:-}" = --test ]; then
    # deb-test.sh: a Debian tree to boot under systemd-nspawn, and systemd-analyze.
    for pkg in debootstrap systemd-container systemd; do
        have "$pkg" || need+=("$pkg")
    done
fi
exec "$(dirname "$0")/../scripts/apt-install-missing.sh" ${need[@]+"${need[@]}"}
