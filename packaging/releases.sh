# Sourced by build-deb.sh and deb-test.sh: the Debian releases kbackupd is built for, and the
# cached debootstrapped trees both scripts build and test in.
#
# One package per release, each with its own virtualenv (the venv is tied to the release's
# Python): bookworm (Debian 12, Python 3.11, systemd 252, PostgreSQL 15) and trixie (Debian 13,
# Python 3.13, systemd 257, PostgreSQL 17).
#
# Versions: VERSION~debNN (0.1.0~deb12, 0.1.0~deb13). The release suffix comes last, so the
# upstream version always decides first (0.2.0~deb12 > 0.1.0~deb13) and, for one upstream
# version, the newer release's build is the newer package (0.1.0~deb13 > 0.1.0~deb12): a
# machine upgraded from bookworm to trixie replaces the bookworm build with the trixie one.
# "~" (not "+") keeps both below a plain 0.1.0, the Debian convention for release-specific
# builds (~bpo, ~debNNuM).
# shellcheck shell=bash

KBACKUP_RELEASES="bookworm trixie"

# release_tag RELEASE: the version suffix's release part (deb12, deb13).
release_tag() {
    case "$1" in
        bookworm) echo deb12 ;;
        trixie) echo deb13 ;;
        *)
            echo "unknown release '$1' (known: $KBACKUP_RELEASES)" >&2
            return 1
            ;;
    esac
}

# The Debian release this machine runs (bookworm on the dev machine), or nothing.
host_release() {
    (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
}

# Same mirror as this machine's own apt sources.
debian_mirror() {
    local m
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    echo "${m:-http://deb.debian.org/debian}"
}
debian_security_mirror() {
    local m
    m=$(awk '/^URIs:/ && /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources \
        2>/dev/null || true)
    echo "${m:-http://deb.debian.org/debian-security}"
}

# write_sources SUITE FILE: apt sources for SUITE, with its updates and security suites, from
# the same mirrors as this machine.
write_sources() {
    cat >"$2" <<EOF
Types: deb
URIs: $(debian_mirror)
Suites: $1 $1-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $(debian_security_mirror)
Suites: $1-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

# make_tree SUITE PACKAGES DIR LOG [HOOK] [APT_PACKAGES]: a minbase tree of SUITE with
# PACKAGES (comma separated, installed by debootstrap) and apt lists, in DIR, made once: a DIR
# with .complete is reused as is. APT_PACKAGES (space separated) are then installed with apt
# in the tree (debootstrap does not order the configuration of large sets well: trixie's
# lintian and debhelper fail in it). HOOK (a function name) runs on the new tree before it is
# marked complete. Callers put a key of everything that shapes the tree into DIR's name, so a
# changed recipe makes a new tree.
make_tree() {
    local suite=$1 packages=$2 dir=$3 treelog=$4 hook=${5:-} apt_packages=${6:-}
    [ -f "$dir/.complete" ] && return 0
    rm -rf "$dir.tmp"
    mkdir -p "$(dirname "$dir")"
    debootstrap --variant=minbase ${packages:+--include="$packages"} "$suite" "$dir.tmp" \
        "$(debian_mirror)" >"$treelog" 2>&1 || {
        tail -20 "$treelog" >&2
        echo "debootstrap $suite failed; log in $treelog" >&2
        return 1
    }
    # Apt inside the tree fetches what a package's Depends need (and updates) from the same
    # mirrors as this machine.
    rm -f "$dir.tmp/etc/apt/sources.list"
    write_sources "$suite" "$dir.tmp/etc/apt/sources.list.d/debian.sources"
    chroot "$dir.tmp" apt-get update -qq >>"$treelog" 2>&1
    if [ -n "$apt_packages" ]; then
        # shellcheck disable=SC2086  # one word per package, on purpose
        systemd-nspawn -q -D "$dir.tmp" --register=no --keep-unit --as-pid2 \
            --setenv=DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends $apt_packages \
            >>"$treelog" 2>&1 </dev/null || {
            tail -20 "$treelog" >&2
            echo "apt-get install in the $suite tree failed; log in $treelog" >&2
            return 1
        }
        chroot "$dir.tmp" apt-get clean
    fi
    if [ -n "$hook" ]; then "$hook" "$dir.tmp" || return 1; fi
    touch "$dir.tmp/.complete"
    mv "$dir.tmp" "$dir"
}

# overlay_root LOWER RUNDIR: mount a throwaway overlay of LOWER on RUNDIR/root (a full copy
# where overlayfs is missing); writes go to RUNDIR/upper.
overlay_root() {
    local lower=$1 run=$2
    rm -rf "$run"
    mkdir -p "$run/upper" "$run/work" "$run/root"
    if ! mount -t overlay overlay \
        -o "lowerdir=$lower,upperdir=$run/upper,workdir=$run/work" "$run/root" 2>/dev/null; then
        echo "overlayfs unavailable; copying the tree" >&2
        cp -a "$lower/." "$run/root/"
    fi
}

# overlay_cleanup RUNDIR: undo overlay_root.
overlay_cleanup() {
    local run=$1
    if mountpoint -q "$run/root" 2>/dev/null; then
        umount "$run/root" || umount -l "$run/root" || true
    fi
    rm -rf "$run"
}
