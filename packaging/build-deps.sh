#!/usr/bin/env bash
# Install the Debian packages that `make deb` and `make deb-test` need on this machine.
#   build-deps.sh --tree   a build in a release's cached tree (the default for every release):
#                          debootstrap and systemd-nspawn; the build tools are in the tree
#   build-deps.sh --host   a build on this machine (KBACKUP_BUILD_ON_HOST=1): the
#                          Build-Depends of debian/control and the checks' tools
#   build-deps.sh --test   deb-test.sh: a tree of each release booted under systemd-nspawn
# Quiet when everything is there; root installs, others are told (scripts/apt-install-missing.sh).
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
want() { for pkg; do have "$pkg" || need+=("$pkg"); done; }
# build-deb.sh itself: dpkg-parsechangelog (dpkg-dev), the source copy (rsync).
want dpkg-dev rsync
for arg; do
    case "$arg" in
        --host) want debhelper dh-virtualenv python3-venv systemd lintian man-db ;;
        --tree | --test) want debootstrap systemd-container systemd ;;
        *)
            echo "build-deps.sh: unknown option '$arg' (expected --host, --tree or --test)" >&2
            exit 2
            ;;
    esac
done
exec "$(dirname "$0")/../scripts/apt-install-missing.sh" ${need[@]+"${need[@]}"}
