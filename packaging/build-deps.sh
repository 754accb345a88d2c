#!/usr/bin/env bash
# Install the Debian packages that `make deb` (and, with --test, `make deb-test`) need.
# Quiet when everything is there; like scripts/sysdeps.sh, root installs, others are told.
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
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi
echo "installing packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
