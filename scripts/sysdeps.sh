#!/usr/bin/env bash
# Install the system packages kbackup's demo and tests need (Debian 12). Quiet when all present.
set -euo pipefail
need=()
command -v zstd >/dev/null || need+=(zstd)
command -v gpg >/dev/null || need+=(gnupg)
command -v pg_dump >/dev/null || need+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v setpriv >/dev/null || need+=(util-linux)
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
