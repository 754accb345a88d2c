#!/usr/bin/env bash
# Install the system packages kbackup's demo and tests need (Debian 12). Quiet when all present.
set -euo pipefail
need=()
command -v zstd >/dev/null || need+=(zstd)
command -v gpg >/dev/null || need+=(gnupg)
command -v jq >/dev/null || need+=(jq)          # docs/format.md by hand (tests/e2e/test_format_by_hand.py)
command -v pg_dump >/dev/null || need+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)  # tests/mariadb_server.py
command -v mariadb-dump >/dev/null || need+=(mariadb-client)
command -v setpriv >/dev/null || need+=(util-linux)
command -v sqlite3 >/dev/null || need+=(sqlite3)  # tests/e2e/test_sqlite.py: by hand
command -v chromium >/dev/null || need+=(chromium)  # tests/e2e/test_dashboard_browser.py
command -v chromedriver >/dev/null || need+=(chromium-driver)  # selenium drives it
command -v openssl >/dev/null || need+=(openssl)  # tests/web_access.py: a self-signed certificate
command -v promtool >/dev/null || need+=(prometheus)  # tests/e2e/test_prometheus_rules.py: promtool
if [ "$(id -u)" = 0 ]; then  # tests/pg17.py: PostgreSQL 17 in a Debian 13 tree (root only)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
fi
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
exec "$(dirname "$0")/apt-install-missing.sh" ${need[@]+"${need[@]}"}
