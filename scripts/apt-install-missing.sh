#!/usr/bin/env bash
# apt-install-missing.sh PKG...: install the given Debian packages (the callers pass only the
# missing ones). Nothing to do: silent. Root installs them; anyone else is told the command.
set -euo pipefail
[ $# -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: $*; install them with: sudo apt-get install $*" >&2
    exit 1
fi
echo "installing system packages: $*"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
