#!/usr/bin/env bash
# make deb-test: build the kbackupd .deb of each Debian release, install it with apt in a
# container of that release booted with real systemd (systemd-nspawn), and check the service
# end to end: start, permissions, a real backup of the container's own PostgreSQL (15 on
# bookworm, 17 on trixie), reload, watchdog, stop during a backup, upgrade and purge.
#
#   packaging/deb-test.sh [RELEASE...]   default: every release (bookworm trixie), in turn
#
# Needs root (debootstrap, overlayfs, nspawn). Each release's Debian tree, with PostgreSQL
# already in it, is made once and cached in $CACHE; each run boots a throwaway overlay on top
# of it, so the cached tree is never modified. The container is always shut down, whatever
# happens.
#
# Environment:
#   KBACKUP_DEB_TEST_CACHE  cache directory (default /var/cache/kbackup-deb-test)
#   DEB                     test this .deb instead of building one (one RELEASE only)
#   KEEP=1                  keep the run's overlay (not the container) for inspection
#
# Single-quoted $... below is meant for the container's shell, awk or dpkg-query, not ours:
# shellcheck disable=SC2016
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=packaging/releases.sh
. packaging/releases.sh

# Several releases: one run of this script per release, one after the other.
releases=${*:-$KBACKUP_RELEASES}
for rel in $releases; do release_tag "$rel" >/dev/null; done
if [ "$(wc -w <<<"$releases")" -gt 1 ]; then
    [ -z "${DEB:-}" ] || { echo "deb-test: DEB= needs a single RELEASE argument" >&2; exit 2; }
    t_all=$SECONDS
    times=()
    for rel in $releases; do
        t_rel=$SECONDS
        "$0" "$rel"
        times+=("$rel $((SECONDS - t_rel))s")
    done
    echo "deb-test: all releases passed in $((SECONDS - t_all))s (${times[*]})"
    exit 0
fi

CACHE=${KBACKUP_DEB_TEST_CACHE:-/var/cache/kbackup-deb-test}
SUITE=$releases
mkdir -p "$CACHE"
# One run per release at a time: runs of a release share its run and log directories, its
# container name and its PostgreSQL port; a second run waits for the first to end.
exec 9>"$CACHE/.lock-$SUITE"
if ! flock -n 9; then
    echo "deb-test: another deb-test of $SUITE is running; waiting for it to end" >&2
    flock 9
fi
MIRROR=$(debian_mirror)
# The tree: systemd to boot, PostgreSQL to back up, man-db for `systemd-analyze verify` to
# check the unit's Documentation=, bash-completion to try kbackupctl's completion. None of
# the package's own dependencies (python3, gnupg, zstd): apt must bring them from Depends.
BASE_PACKAGES=systemd,systemd-sysv,dbus,postgresql,man-db,bash-completion
# Bump when the way the tree is prepared changes, so old caches are not reused.
BASE_RECIPE=2
key=$(echo "$SUITE $MIRROR $BASE_PACKAGES $BASE_RECIPE" | sha256sum | cut -c1-12)
BASE=$CACHE/base-$SUITE-$key
RUN=$CACHE/run-$SUITE
CT_ROOT=$RUN/root
# This release's logs and scratch files (nspawn.log, apt.log, ...).
LOGS=$CACHE/$SUITE
T0=$SECONDS
NSPAWN_PID=
CT_PID=

log() { printf '[%s %4ds] %s\n' "$SUITE" $((SECONDS - T0)) "$*"; }
ok() { log "ok: $*"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out after waiting for: $what"
        sleep 0.2
    done
}
# `systemctl reload` then its effect. On systemd >= 253 the unit is Type=notify-reload and
# `systemctl reload` returns only once the daemon has read the new configuration: the effect
# must be there at once. On systemd 252 (Type=notify, ExecReload=kill -HUP) it returns once
# the signal is sent, so wait for the effect.
reload_then() {  # reload_then DESCRIPTION COMMAND...
    local what=$1
    shift
    ct systemctl reload kbackupd
    if [ "$UNIT_TYPE" = notify-reload ]; then
        "$@" >/dev/null 2>&1 || die "systemctl reload returned before: $what"
    else
        wait_for 10 "$what" "$@"
    fi
}
job_loaded() { ct kbackupctl jobs | grep -qw "$1"; }
job_gone() { ! job_loaded "$1"; }
rejections() { ct journalctl -u kbackupd --no-pager -o cat | grep -c reload.rejected || true; }
more_rejections() { [ "$(rejections)" -gt "$1" ]; }
reload_error_shown() { ct kbackupctl --json status | grep -q '"last_reload_error": "'; }
reload_error_cleared() { ! ct kbackupctl --json status | grep -q '"last_reload_error": "'; }

# ---------------------------------------------------------------------- the container

# Run a command inside the booted container, as root, with a clean environment.
ct() {
    nsenter -t "$CT_PID" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive "$@" </dev/null
}
# ... as another user of the container (runuser: a login-like environment, groups included).
ct_as() {
    local user=$1
    shift
    ct runuser -u "$user" -- "$@"
}

diagnostics() {
    [ -n "$CT_PID" ] && kill -0 "$CT_PID" 2>/dev/null || return 0
    echo "---- systemctl status kbackupd" >&2
    ct systemctl status --no-pager --lines=0 kbackupd >&2 || true
    echo "---- journalctl -u kbackupd (last 60 lines)" >&2
    ct journalctl -u kbackupd --no-pager -n 60 >&2 || true
}

die() {
    log "FAIL: $*" >&2
    diagnostics
    exit 1
}

shutdown_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # Clean poweroff first; SIGTERM to nspawn asks the same; SIGKILL as the last resort.
        if [ -n "$CT_PID" ]; then
            timeout 10 nsenter -t "$CT_PID" -a systemctl poweroff >/dev/null 2>&1 || true
        fi
        timeout 30 tail --pid="$NSPAWN_PID" -f /dev/null || {
            kill -TERM "$NSPAWN_PID" 2>/dev/null || true
            timeout 15 tail --pid="$NSPAWN_PID" -f /dev/null || kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        }
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID=
    CT_PID=
}

cleanup() {
    local rc=$?
    shutdown_container
    if mountpoint -q "$CT_ROOT" 2>/dev/null; then
        umount "$CT_ROOT" || umount -l "$CT_ROOT" || true
    fi
    if [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$RUN"
    fi
    if [ $rc -eq 0 ]; then
        log "deb-test passed"
    else
        log "deb-test FAILED (exit $rc); container log: $LOGS/nspawn.log"
    fi
}

boot() {
    log "booting the container"
    # --register=no: there is no systemd on this host to register with; --keep-unit: stay in
    # the caller's cgroup for the same reason. The apt archive cache is shared between runs.
    systemd-nspawn -D "$CT_ROOT" --register=no --keep-unit -b --console=read-only \
        --machine="kbackup-deb-test-$SUITE" \
        --bind="$CACHE/apt-archives:/var/cache/apt/archives" \
        >"$LOGS/nspawn.log" 2>&1 </dev/null &
    NSPAWN_PID=$!
    # The container's init is the process named systemd whose parent is nspawn.
    local i
    for i in $(seq 1 100); do
        CT_PID=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
        [ -n "$CT_PID" ] && break
        kill -0 "$NSPAWN_PID" 2>/dev/null || die "systemd-nspawn exited; see $LOGS/nspawn.log"
        sleep 0.2
    done
    [ -n "$CT_PID" ] || die "no systemd inside the container after 20 s"
    # is-system-running --wait fails at once while the container's systemd is not yet
    # reachable, so ask again until it answers or 90 s have passed.
    local state='' deadline=$((SECONDS + 90))
    while [ $SECONDS -lt $deadline ]; do
        state=$(timeout 60 nsenter -t "$CT_PID" -a systemctl is-system-running --wait \
            2>/dev/null || true)
        case "$state" in running | degraded | maintenance) break ;; esac
        kill -0 "$NSPAWN_PID" 2>/dev/null || die "systemd-nspawn exited; see $LOGS/nspawn.log"
        sleep 0.5
    done
    case "$state" in
        running) ;;
        degraded) log "container is degraded: $(ct systemctl --failed --no-legend --plain | tr '\n' ' ')" ;;
        *) die "container did not finish booting (state: ${state:-none})" ;;
    esac
    ok "container booted ($state)"
}

# ---------------------------------------------------------------------- the cached tree

# The container shares this machine's network: its PostgreSQL listens on its own Unix socket
# only, on the default port number (pg_createcluster picked another one because this
# machine's server holds 5432).
prepare_base() {  # prepare_base DIR (make_tree's hook)
    local conf
    conf=$(echo "$1"/etc/postgresql/*/main/postgresql.conf)
    [ -f "$conf" ] || { echo "no PostgreSQL cluster in the new tree" >&2; return 1; }
    sed -i -e "s/^#\?listen_addresses = .*/listen_addresses = ''/" \
        -e 's/^port = .*/port = 5432/' "$conf"
    echo kbackup-deb-test >"$1/etc/hostname"
    # No root password login is needed: everything runs through nsenter.
}

make_base() {
    if [ -f "$BASE/.complete" ]; then
        log "using cached Debian tree $BASE"
        return
    fi
    log "debootstrap $SUITE from $MIRROR into $BASE (once; cached for later runs)"
    make_tree "$SUITE" "$BASE_PACKAGES" "$BASE" "$LOGS/debootstrap.log" prepare_base ||
        die "could not make the $SUITE tree; log in $LOGS/debootstrap.log"
    # Older trees of this release (another recipe or mirror) are no longer used; so are
    # those of before trees were per release (base-KEY).
    find "$CACHE" -maxdepth 1 \( -name "base-$SUITE-*" -o -regex '.*/base-[0-9a-f]*' \) \
        ! -name "base-$SUITE-$key" -exec rm -rf {} +
    ok "Debian tree ready ($(du -sh "$BASE" | cut -f1))"
}

# A throwaway root: an overlay on the cached tree (a full copy where overlayfs is missing).
make_run_root() {
    mkdir -p "$CACHE/apt-archives/partial"
    overlay_root "$BASE" "$RUN"
}

# ---------------------------------------------------------------------- main

trap cleanup EXIT
# A check that fails without calling die (set -e) still says where, and shows the journal.
trap 'log "FAIL: line $LINENO: $BASH_COMMAND"; diagnostics' ERR
[ "$(id -u)" = 0 ] || { echo "deb-test: needs root (debootstrap, mounts, nspawn)" >&2; exit 1; }
packaging/build-deps.sh --test
mkdir -p "$LOGS"

# A leftover of an interrupted run would be booted twice otherwise.
if mountpoint -q "$CT_ROOT" 2>/dev/null; then umount -l "$CT_ROOT"; fi

if [ -n "${DEB:-}" ]; then
    deb=$(realpath "$DEB")
else
    log "building the package"
    LINTIAN=0 packaging/build-deb.sh "$SUITE"
    deb=$root/dist/kbackupd_$(dpkg-parsechangelog -SVersion)~$(release_tag "$SUITE")_$(dpkg --print-architecture).deb
fi
version=$(dpkg-deb -f "$deb" Version)
log "testing $deb (version $version)"

# The "newer build" for the upgrade: the same package with a higher version, repacked rather
# than rebuilt (what is tested is dpkg's and the maintainer scripts' handling of an upgrade).
new_version=$version+upgradetest1
new_deb=$CACHE/kbackupd_${new_version}_test.deb
repack=$(mktemp -d)
dpkg-deb -R "$deb" "$repack/pkg"
sed -i "s/^Version: .*/Version: $new_version/" "$repack/pkg/DEBIAN/control"
mkdir -p "$CACHE"
# Fast compression: this file only lives for the test.
dpkg-deb -Zgzip -z1 -b "$repack/pkg" "$new_deb" >/dev/null
rm -rf "$repack"
dpkg --compare-versions "$new_version" gt "$version" || die "upgrade version is not newer"

make_base
make_run_root
mkdir -p "$CT_ROOT/root/debs" "$CT_ROOT/srv/deb-test"
cp "$deb" "$CT_ROOT/root/debs/kbackupd.deb"
cp "$new_deb" "$CT_ROOT/root/debs/kbackupd-new.deb"
cp packaging/deb-test/* "$CT_ROOT/srv/deb-test/"
boot

# ---- install ---------------------------------------------------------------------------
log "apt-get install kbackupd.deb"
if ! ct apt-get install -y -q /root/debs/kbackupd.deb >"$LOGS/apt.log" 2>&1; then
    # The cached package lists may be older than the mirror: refresh once and retry.
    ct apt-get update -q >>"$LOGS/apt.log" 2>&1
    ct apt-get install -y -q /root/debs/kbackupd.deb >>"$LOGS/apt.log" 2>&1 ||
        { tail -30 "$LOGS/apt.log" >&2; die "apt-get install failed"; }
fi
ok "installed: $(ct dpkg-query -W -f='${Package} ${Version} ${Status}' kbackupd)"

[ "$(ct systemctl is-active kbackupd)" = active ] || die "kbackupd is not active after install"
[ "$(ct systemctl is-enabled kbackupd)" = enabled ] || die "kbackupd is not enabled"
ok "systemctl is-active kbackupd: active (enabled)"

# The unit's type follows the container's systemd: notify-reload from 253 on (without
# ExecReload=: systemd sends SIGHUP itself), notify with ExecReload= before.
systemd_version=$(ct systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
UNIT_TYPE=$(ct systemctl show -p Type --value kbackupd)
exec_reload=$(ct systemctl show -p ExecReload --value kbackupd)
if [ "$systemd_version" -ge 253 ]; then
    [ "$UNIT_TYPE" = notify-reload ] || die "Type=$UNIT_TYPE on systemd $systemd_version, expected notify-reload"
    [ -z "$exec_reload" ] || die "ExecReload= set on a notify-reload unit: $exec_reload"
else
    [ "$UNIT_TYPE" = notify ] || die "Type=$UNIT_TYPE on systemd $systemd_version, expected notify"
    [ -n "$exec_reload" ] || die "no ExecReload= on a Type=notify unit"
fi
pg_version=$(ct sh -c 'ls /usr/lib/postgresql')
ok "systemd $systemd_version: Type=$UNIT_TYPE; PostgreSQL $pg_version; $(ct python3 --version)"

# Users, groups, directories and conffiles as the package promises.
ct getent passwd kbackup >/dev/null || die "no user kbackup"
ct getent group kbackup-admin >/dev/null || die "no group kbackup-admin"
expect_stat() {  # PATH "owner:group mode"
    local got
    got=$(ct stat -c '%U:%G %a' "$1")
    [ "$got" = "$2" ] || die "$1 is $got, expected $2"
}
expect_stat /etc/kbackup "root:kbackup 750"
expect_stat /etc/kbackup/jobs.d "root:kbackup 750"
expect_stat /var/lib/kbackup "kbackup:kbackup 750"
expect_stat /var/backups/kbackup "kbackup:kbackup 750"
expect_stat /run/kbackup "kbackup:kbackup 750"
expect_stat /run/kbackup/kbackupd.sock "kbackup:kbackup 660"
conffiles=$(ct dpkg-query -W -f='${Conffiles}' kbackupd)
for f in /etc/kbackup/kbackupd.toml /etc/kbackup/jobs.d/example.toml.sample; do
    grep -q " $f " <<<"$conffiles" || die "$f is not a conffile"
done
ct test -L /usr/bin/kbackupd -a -L /usr/bin/kbackupctl || die "no /usr/bin links"
ok "users, groups, directory modes, socket, conffiles"

# The unit as installed: verify must be silent, the exposure score at most 2.0.
verify_out=$(ct systemd-analyze verify kbackupd.service 2>&1) ||
    die "systemd-analyze verify failed: $verify_out"
[ -z "$verify_out" ] || die "systemd-analyze verify warns: $verify_out"
score=$(ct systemd-analyze security kbackupd.service --no-pager |
    sed -n 's/.*Overall exposure level for kbackupd.service: \([0-9.]*\).*/\1/p')
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' ||
    die "exposure score ${score:-?} > 2.0"
ok "systemd-analyze verify: clean; security: $score"

# The daemon has CAP_DAC_READ_SEARCH and nothing else, and no children yet.
main_pid=$(ct systemctl show -p MainPID --value kbackupd)
cap_eff=$(ct awk '/^CapEff/ {print $2}' "/proc/$main_pid/status")
[ "$cap_eff" = 0000000000000004 ] || die "CapEff of kbackupd is $cap_eff, expected only CAP_DAC_READ_SEARCH"
ok "main process runs as $(ct stat -c %U "/proc/$main_pid") with CapEff=$cap_eff"

# ---- a database, a file tree, users ----------------------------------------------------
ct runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -f /srv/deb-test/shop.sql >/dev/null ||
    die "cannot create the test database"
ct mkdir -p /srv/shop/uploads/private /srv/shop/docs
ct sh -c 'seq 1 20000 > /srv/shop/uploads/invoice-1.txt; echo manual > /srv/shop/docs/readme.txt'
# Only root may read this one: the backup proves CAP_DAC_READ_SEARCH works.
ct sh -c 'echo "root only" > /srv/shop/uploads/private/secret.txt; chmod 600 /srv/shop/uploads/private/secret.txt; chmod 700 /srv/shop/uploads/private'
ct useradd -m -G kbackup alice                    # may read
ct useradd -m -G kbackup,kbackup-admin bob        # may run jobs
ct useradd -m mallory                              # nothing
ct install -m 0755 /srv/deb-test/slow-pg_dump /usr/local/bin/slow-pg_dump
ok "database shop ($(ct runuser -u postgres -- psql -Atc 'select count(*) from orders' shop) orders), files, users alice/bob/mallory"

# ---- configure a job, reload ------------------------------------------------------------
ct install -m 0640 -g kbackup /srv/deb-test/shop.toml /etc/kbackup/jobs.d/shop.toml
ct kbackupctl config check >/dev/null || die "config check rejects shop.toml"
reload_then "job shop loaded after reload" job_loaded shop
ok "job shop configured and loaded by systemctl reload ($UNIT_TYPE)"

# ---- who may do what --------------------------------------------------------------------
ct kbackupctl status >/dev/null || die "kbackupctl status fails as root"
ct_as alice kbackupctl status >/dev/null || die "kbackupctl status fails for alice (group kbackup)"
# (cmd && rc=0 || rc=$?: an expected failure, neither fatal nor reported by the ERR trap.)
out=$(ct_as mallory kbackupctl status 2>&1) && rc=0 || rc=$?
[ "$rc" -ne 0 ] || die "mallory (no group) could read the status"
grep -qi "permission denied" <<<"$out" || die "mallory refused, but not for permissions: $out"
ok "status: root and alice allowed; mallory refused (exit $rc: $out)"

out=$(ct_as alice kbackupctl run shop 2>&1) && rc=0 || rc=$?
[ "$rc" -ne 0 ] || die "alice (group kbackup only) could start a job"
grep -q "may only read" <<<"$out" || die "alice refused, but why? $out"
ok "run: alice refused (exit $rc: $out)"

# ---- a real backup ----------------------------------------------------------------------
log "kbackupctl run shop --wait (as bob, group kbackup-admin)"
backup_id=$(ct_as bob kbackupctl run shop --wait 2>"$LOGS/run.err") ||
    { cat "$LOGS/run.err" >&2; die "backup of job shop failed"; }
backup_id=$(tail -1 <<<"$backup_id")
backup_dir=$(ct find /var/backups/kbackup/shop -mindepth 3 -maxdepth 3 -type d -name "$backup_id")
[ -n "$backup_dir" ] || die "no directory for backup $backup_id"
components=$(ct /srv/deb-test/check-backup.py "$backup_dir") ||
    die "backup $backup_id does not match its manifest"
ok "backup $backup_id: manifest checksums match ($(awk '{print $1 ":" $2}' <<<"$components" | tr '\n' ' '))"
# The dump was made by the client tools of the server's own major (issue 16), as recorded.
dumped_by=$(ct python3 -c 'import json, sys
manifest = json.load(open(sys.argv[1] + "/manifest.json"))
print(next(c for c in manifest["components"] if c["kind"] == "postgres")["database"].get("pg_dump_version"))' "$backup_dir")
case "$dumped_by" in
    "$pg_version".*) ;;
    *) die "the manifest records pg_dump_version '$dumped_by', expected $pg_version.x" ;;
esac
ok "manifest: dumped by pg_dump $dumped_by (PostgreSQL $pg_version in the container)"

# Restore the dump by hand with stock tools into a new database and compare every row.
dump_file=$(awk '$1 == "postgres" {print $3}' <<<"$components")
[ -n "$dump_file" ] || die "the backup has no postgres component"
ct runuser -u postgres -- createdb shop_restored
ct sh -c "zstd -dc '$backup_dir/$dump_file' | runuser -u postgres -- pg_restore --no-owner -d shop_restored" ||
    die "pg_restore of $dump_file failed"
orig=$(ct runuser -u postgres -- psql -At -f /srv/deb-test/table-digest.sql shop)
restored=$(ct runuser -u postgres -- psql -At -f /srv/deb-test/table-digest.sql shop_restored)
[ "$orig" = "$restored" ] || die "restored database differs: $orig vs $restored"
ok "restored with zstd | pg_restore: identical rows ($(tr '\n' ' ' <<<"$orig"))"

files_file=$(awk '$1 == "files" && $2 == "uploads" {print $3}' <<<"$components")
secret=$(ct sh -c "zstd -dc '$backup_dir/$files_file' | tar -xO -f - --wildcards '*private/secret.txt'") ||
    die "the root-only file is not in the files backup"
[ "$secret" = "root only" ] || die "root-only file has wrong content: $secret"
ok "files component has the root-only file (CAP_DAC_READ_SEARCH)"

ct kbackupctl backups shop | grep -q "$backup_id" || die "backup $backup_id not in the catalog"

# The daemon's own proof, inside its sandbox: restore into a scratch database and directory.
ct kbackupctl verify "$backup_id" --level restore-test --wait >"$LOGS/verify.out" 2>&1 ||
    { cat "$LOGS/verify.out" >&2; die "kbackupctl verify --level restore-test failed"; }
ok "kbackupctl verify $backup_id --level restore-test: $(tail -1 "$LOGS/verify.out")"

log "the dashboard on the socket, as alice (its templates and static files are in the package)"
dashboard=$(ct_as alice python3 -c '
import socket
def get(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect("/run/kbackup/kbackupd.sock")
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")
home, css = get("/"), get("/static/dash.css")
print(home.split(" ")[1], css.split(" ")[1], "Overview" in home, ">shop<" in home,
      "Run now" in home)') || die "the dashboard could not be read"
[ "$dashboard" = "200 200 True True False" ] ||
    die "dashboard: expected the overview with job shop and no actions for a viewer, got: $dashboard"
ok "dashboard: / and /static/dash.css answer alice (a viewer: no Run now button)"

# ---- hooks around the app (issue 17) -------------------------------------------------------
# The recipe of README.md: a polkit rule lets user kbackup stop and start one named unit; the
# unit's sandbox (NoNewPrivileges=, no setuid) is left as it is. A dummy app.service is stopped
# by a before_backup hook and started again by after_backup; other.service is not in the rule.
log "hooks: polkit rule, app.service stopped and started around a backup"
ct apt-get install -y -q polkitd >>"$LOGS/apt.log" 2>&1 ||
    { tail -30 "$LOGS/apt.log" >&2; die "apt-get install polkitd failed"; }
ct install -m 0644 /srv/deb-test/50-kbackup-hooks.rules /etc/polkit-1/rules.d/50-kbackup-hooks.rules
for unit in app other; do
    ct sh -c "printf '[Service]\nExecStart=/bin/sleep infinity\n' > /etc/systemd/system/$unit.service"
done
ct systemctl daemon-reload
ct systemctl start app.service other.service
app_pid_before=$(ct systemctl show -p MainPID --value app.service)
ct install -m 0640 -g kbackup /srv/deb-test/app.toml /etc/kbackup/jobs.d/app.toml
ct install -m 0640 -g kbackup /srv/deb-test/other.toml /etc/kbackup/jobs.d/other.toml
reload_then "jobs app and other loaded after reload" job_loaded other
app_backup=$(ct kbackupctl run app --wait 2>"$LOGS/hooks.err") ||
    { cat "$LOGS/hooks.err" >&2; die "backup of job app (with hooks) failed"; }
app_backup=$(tail -1 <<<"$app_backup")
[ "$(ct systemctl is-active app.service)" = active ] || die "app.service not active after the backup"
app_pid_after=$(ct systemctl show -p MainPID --value app.service)
[ "$app_pid_after" != "$app_pid_before" ] || die "app.service was not restarted (pid $app_pid_after)"
# What the hooks did, as the run recorded it (JSON read on this side: no jq in the container).
hooks=$(ct kbackupctl --json runs --id "$app_backup" | python3 -c '
import json, sys
for h in json.load(sys.stdin)["hooks"]:
    print(h["hook"], h["argv"][1], h["exit"], h["stdout"].strip() or "-")')
expected="before_backup stop 0 -
before_backup -c 0 inactive
after_backup start 0 -"
[ "$hooks" = "$expected" ] || die "hooks of backup $app_backup: got '$hooks', expected '$expected'"
ct journalctl -u kbackupd --no-pager -o cat | grep -q "event=hook job=app .*hook=after_backup argv0=systemctl exit=0" ||
    die "no event=hook line for after_backup in the journal"
ok "hooks: app.service inactive during backup $app_backup, active after (pid $app_pid_before -> $app_pid_after)"
out=$(ct kbackupctl run other --wait 2>&1) && rc=0 || rc=$?
[ "$rc" -ne 0 ] || die "a hook stopped other.service, which the polkit rule does not name"
grep -q 'before_backup hook "systemctl stop other.service" failed (exit 1): Failed to stop other.service: ' <<<"$out" ||
    die "job other failed, but not by its hook: $out"
[ "$(ct systemctl is-active other.service)" = active ] || die "other.service was stopped"
ok "hooks: stopping other.service refused by polkit, the run failed: $(tail -1 <<<"$out")"
ct rm /etc/kbackup/jobs.d/app.toml /etc/kbackup/jobs.d/other.toml
reload_then "jobs app and other gone after reload" job_gone other
ct systemctl stop app.service other.service

# ---- reload: a new valid job, then a broken config --------------------------------------
ct install -m 0640 -g kbackup /srv/deb-test/docs.toml /etc/kbackup/jobs.d/docs.toml
reload_then "job docs loaded after reload" job_loaded docs
ok "reload with a new valid job: docs loaded"

# Bash completion of job names (read from jobs.d/, as root here).
completion=$(ct bash -c 'source /usr/share/bash-completion/bash_completion
    COMP_WORDS=(kbackupctl run ""); COMP_CWORD=2; COMP_LINE="kbackupctl run "; COMP_POINT=15
    _completion_loader kbackupctl; _kbackupctl kbackupctl "" run; echo "${COMPREPLY[*]}"')
[ "$completion" = "docs shop" ] || die "completion of 'kbackupctl run ' gave '$completion'"
ok "bash completion: kbackupctl run <TAB> -> $completion"

# The Prometheus rules and Grafana dashboard of the README's "Monitoring" section.
for f in kbackup-rules.yml kbackup-grafana.json; do
    ct test -s "/usr/share/kbackupd/monitoring/$f" || die "/usr/share/kbackupd/monitoring/$f missing"
done
ok "monitoring rules and dashboard in /usr/share/kbackupd/monitoring/"

pid_before=$(ct systemctl show -p MainPID --value kbackupd)
rejected_before=$(rejections)
ct install -m 0640 -g kbackup /srv/deb-test/broken.toml /etc/kbackup/jobs.d/broken.toml
reload_then "the reload error in the status" reload_error_shown
# (The journal may lag behind the daemon's own state by a moment, whatever the unit type.)
wait_for 10 "reload.rejected in the journal" more_rejections "$rejected_before"
[ "$(ct systemctl is-active kbackupd)" = active ] || die "kbackupd died on a broken config"
[ "$(ct systemctl show -p MainPID --value kbackupd)" = "$pid_before" ] ||
    die "kbackupd restarted on a broken config"
ct kbackupctl jobs | grep -qw docs || die "old config lost after a rejected reload"
ct kbackupctl --json status | grep -q '"last_reload_error": "' ||
    die "status does not report the reload error"
ok "reload with a broken config: still running (pid $pid_before), error logged: $(ct journalctl -u kbackupd --no-pager -o cat | grep reload.rejected | tail -1)"
ct rm /etc/kbackup/jobs.d/broken.toml
reload_then "the reload error to clear" reload_error_cleared

# ---- watchdog -----------------------------------------------------------------------------
restarts_before=$(ct systemctl show -p NRestarts --value kbackupd)
log "kill -STOP $pid_before; waiting for the watchdog (WatchdogSec=30s)"
ct kill -STOP "$pid_before"
new_pid=
for i in $(seq 1 90); do
    sleep 1
    p=$(ct systemctl show -p MainPID --value kbackupd)
    if [ "$p" != 0 ] && [ "$p" != "$pid_before" ] &&
        [ "$(ct systemctl is-active kbackupd)" = active ]; then
        new_pid=$p
        break
    fi
done
[ -n "$new_pid" ] || die "no watchdog restart within 90 s"
ct journalctl -u kbackupd --no-pager -o cat | grep -q "Watchdog timeout" ||
    die "restarted, but not by the watchdog"
restarts_after=$(ct systemctl show -p NRestarts --value kbackupd)
ok "watchdog: stopped daemon killed and restarted in ${i}s (pid $pid_before -> $new_pid, NRestarts $restarts_before -> $restarts_after)"

# ---- stop during a running backup --------------------------------------------------------
ct install -m 0640 -g kbackup /srv/deb-test/slow.toml /etc/kbackup/jobs.d/slow.toml
reload_then "job slow loaded after reload" job_loaded slow
slow_id=$(ct kbackupctl run slow)
# Wait until the backup writes its first object and its pg_dump runs (the object is opened
# before pg_dump starts, so look for both). Process ids are the container's.
partial=
dump_pid=
for i in $(seq 1 60); do
    partial=$(ct find /var/backups/kbackup/slow -name '*.partial' 2>/dev/null | head -1 || true)
    dump_pid=$(ct sh -c 'grep -l "^/usr/lib/postgresql/[0-9]*/bin/pg_dump" /proc/[0-9]*/cmdline 2>/dev/null | head -1 | cut -d/ -f3')
    [ -n "$partial" ] && [ -n "$dump_pid" ] && break
    sleep 0.5
done
[ -n "$partial" ] || die "the slow backup never started writing"
[ -n "$dump_pid" ] || die "no pg_dump running for the slow backup"
# Its pg_dump must not have the daemon's NOTIFY_SOCKET.
dump_env=$(ct sh -c "tr '\\0' '\\n' < /proc/$dump_pid/environ") || die "cannot read pg_dump's environment"
grep -q '^PGAPPNAME=' <<<"$dump_env" || die "pg_dump's environment is not the one kbackupd gives"
if grep -q '^NOTIFY_SOCKET=' <<<"$dump_env"; then die "pg_dump inherited NOTIFY_SOCKET"; fi
# ... while the daemon itself has it (else the check above proves nothing).
main_pid=$(ct systemctl show -p MainPID --value kbackupd)
ct sh -c "tr '\\0' '\\n' < /proc/$main_pid/environ" | grep -q '^NOTIFY_SOCKET=' ||
    die "kbackupd itself has no NOTIFY_SOCKET"
ok "slow backup $slow_id running (partial: ${partial##*/}); pg_dump (pid $dump_pid) has no NOTIFY_SOCKET"

t_stop=$SECONDS
timeout 90 nsenter -t "$CT_PID" -a systemctl stop kbackupd || die "systemctl stop failed"
took=$((SECONDS - t_stop))
# Nothing may look complete: no manifest, no half-written object under its final name.
left=$(ct find /var/backups/kbackup/slow \( -name manifest.json -o -name '*.partial' \) 2>/dev/null || true)
[ -z "$left" ] || die "left after stop during a backup: $left"
# ([s]: the pattern must not match this grep's own command line.)
if ct sh -c 'grep -l "[s]low-pg_dump" /proc/[0-9]*/cmdline' >/dev/null 2>&1; then
    die "slow-pg_dump still running after stop"
fi
ct test ! -e /run/kbackup || die "/run/kbackup left after stop"
ok "stop during a backup took ${took}s; no manifest or partial object left, no child left"
ct systemctl start kbackupd
# JSON is read on this side: the container has no jq.
status=$(ct kbackupctl --json runs slow | python3 -c '
import json, sys
runs = [r for r in json.load(sys.stdin)["items"] if r["id"] == sys.argv[1]]
print(runs[0]["status"] if runs else "missing")' "$slow_id")
[ "$status" = failed ] || die "the interrupted run is '$status', expected failed"
left=$(ct find /var/backups/kbackup/slow -type f 2>/dev/null || true)
[ -z "$left" ] || die "the restarted daemon did not clean up the interrupted run: $left"
ok "after restart: interrupted run $slow_id is failed, its objects removed"
ct rm /etc/kbackup/jobs.d/slow.toml
reload_then "job slow gone after reload" job_gone slow

# ---- upgrade --------------------------------------------------------------------------------
ct sed -i 's/^#max_concurrent_jobs = 2/max_concurrent_jobs = 3  # edited by deb-test/' \
    /etc/kbackup/kbackupd.toml
ct grep -q "edited by deb-test" /etc/kbackup/kbackupd.toml || die "could not edit the conffile"
pid_before=$(ct systemctl show -p MainPID --value kbackupd)
log "apt-get install kbackupd $new_version (upgrade)"
ct apt-get install -y -q /root/debs/kbackupd-new.deb >>"$LOGS/apt.log" 2>&1 ||
    { tail -30 "$LOGS/apt.log" >&2; die "upgrade failed"; }
[ "$(ct dpkg-query -W -f='${Version}' kbackupd)" = "$new_version" ] || die "version not upgraded"
ct grep -q "edited by deb-test" /etc/kbackup/kbackupd.toml || die "upgrade lost the edited conffile"
ct test ! -e /etc/kbackup/kbackupd.toml.dpkg-new || die "upgrade left kbackupd.toml.dpkg-new"
[ "$(ct systemctl is-active kbackupd)" = active ] || die "kbackupd not active after upgrade"
[ "$(ct systemctl show -p MainPID --value kbackupd)" != "$pid_before" ] ||
    die "kbackupd not restarted by the upgrade"
ct kbackupctl --json status | grep -q '"max_concurrent_jobs": 3' ||
    die "the restarted daemon does not use the edited conffile"
ct kbackupctl backups shop | grep -q "$backup_id" || die "the catalog lost backup $backup_id"
expect_stat /etc/kbackup "root:kbackup 750"
ok "upgrade to $new_version: edited conffile kept, daemon restarted with it, catalog kept"

# ---- remove, then purge ---------------------------------------------------------------------
ct apt-get remove -y -q kbackupd >>"$LOGS/apt.log" 2>&1 || die "apt-get remove failed"
ct test ! -e /opt/venvs/kbackupd || die "remove left /opt/venvs/kbackupd"
ct test -f /etc/kbackup/kbackupd.toml || die "remove deleted the configuration"
ct test -f /var/lib/kbackup/catalog.sqlite3 || die "remove deleted the catalog"
[ "$(ct systemctl is-active kbackupd)" != active ] || die "kbackupd still running after remove"
ok "remove: program gone, configuration and catalog kept"

ct apt-get purge -y -q kbackupd >>"$LOGS/apt.log" 2>&1 || die "apt-get purge failed"
for gone in /etc/kbackup /var/lib/kbackup /var/log/kbackup /lib/systemd/system/kbackupd.service; do
    ct test ! -e "$gone" || die "purge left $gone"
done
ct test -f "$backup_dir/manifest.json" || die "purge deleted the backups themselves"
ct getent passwd kbackup >/dev/null || die "purge removed user kbackup (files may still be owned by it)"
ok "purge: configuration, catalog, logs removed; backups in /var/backups/kbackup and user kbackup kept"

shutdown_container
log "all checks passed in $((SECONDS - T0))s"
