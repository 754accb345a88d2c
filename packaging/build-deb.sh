#!/usr/bin/env bash
# Build the kbackupd .debs into dist/ and check them with lintian: `make deb`.
#
#   packaging/build-deb.sh [RELEASE...]   default: every release (bookworm trixie)
#
# One package per Debian release, dist/kbackupd_VERSION~debNN_ARCH.deb, each with a
# virtualenv of that release's Python (see packaging/releases.sh for the version scheme).
# Every release builds in a clean tree of its own: a debootstrapped minbase tree of that
# release with only its build dependencies, made once and cached in $KBACKUP_DEB_BUILD_CACHE
# (default /var/cache/kbackup-deb-build; TREE_RECIPE below invalidates old trees), run
# read-only with systemd-nspawn, and checked there with that release's lintian and
# systemd-analyze. So a package never depends on what this machine has installed: not its
# pip configuration or local wheels, not its Python's patch level, not its systemd.
#
# Each build runs in a copy of the source tree (build/deb/RELEASE/), so that debhelper's
# work files and dpkg-buildpackage's outputs (which it writes to the parent directory) never
# land in the working tree.
#
# Environment:
#   DEB_VERSION=V   build version V~debNN instead of debian/changelog's (in the copy only).
#   LINTIAN=0       skip the lintian check.
#   KBACKUP_BUILD_ON_HOST=1  for developers: build the release this machine runs on this
#                   machine, with its installed tools (faster without a tree, but the package
#                   then reflects this machine); other releases still build in their trees.
#   KBACKUP_DEB_BUILD_CACHE  where the build trees and pip's download cache live.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=packaging/releases.sh
. packaging/releases.sh

releases=${*:-$KBACKUP_RELEASES}
for rel in $releases; do release_tag "$rel" >/dev/null; done

# Which releases build on this machine (only its own, and only when asked).
case "${KBACKUP_BUILD_ON_HOST:-0}" in
    0 | 1) ;;
    *)
        echo "build-deb: KBACKUP_BUILD_ON_HOST=$KBACKUP_BUILD_ON_HOST: expected 0 (build in" \
            "the release's tree, the default) or 1 (build the host's release here)" >&2
        exit 2
        ;;
esac
on_host() {  # on_host RELEASE: does RELEASE build on this machine?
    [ "${KBACKUP_BUILD_ON_HOST:-0}" = 1 ] && [ "$1" = "$(host_release)" ]
}
deps=()
for rel in $releases; do
    if on_host "$rel"; then deps+=(--host); else deps+=(--tree); fi
done
# shellcheck disable=SC2046  # one option per word
packaging/build-deps.sh $(printf '%s\n' "${deps[@]}" | sort -u)

BUILD_CACHE=${KBACKUP_DEB_BUILD_CACHE:-/var/cache/kbackup-deb-build}
# The build trees: build-essential and the Build-Depends of debian/control (dpkg-buildpackage
# checks both), what build-deb runs in them (lintian, systemd-analyze, man-db for lintian's
# man page checks) and CA certificates for pip.
TREE_PACKAGES="build-essential debhelper dh-virtualenv dpkg-dev python3-venv systemd lintian man-db ca-certificates"
# Bump when the way a build tree is prepared changes, so old trees are not reused.
TREE_RECIPE=2
# A tree is remade once it is this many days old, so builds take the release's point updates
# (its Python, debhelper, lintian) rather than those of the day the tree was made.
TREE_MAX_AGE=${KBACKUP_DEB_TREE_MAX_AGE:-30}
[[ "$TREE_MAX_AGE" =~ ^[0-9]+$ ]] || {
    echo "build-deb: KBACKUP_DEB_TREE_MAX_AGE=$TREE_MAX_AGE: expected a number of days" >&2
    exit 2
}

changelog_version=$(dpkg-parsechangelog -SVersion)
upstream_version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# A native package: its version is the project's, possibly with a +suffix for rebuilds; the
# release suffix (~debNN) is added per build.
case "$changelog_version" in
    "$upstream_version" | "$upstream_version"+*) ;;
    *)
        echo "build-deb: debian/changelog says $changelog_version but pyproject.toml says" \
            "$upstream_version; add a changelog entry" >&2
        exit 1
        ;;
esac
base_version=${DEB_VERSION:-$changelog_version}
arch=$(dpkg --print-architecture)
mkdir -p dist

# The source to build: what git would copy (tracked and new files, minus ignored ones); outside
# a git checkout (a release tarball), everything but the same directories.
copy_source() {  # copy_source DEST
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
            rsync -a --from0 --files-from=- ./ "$1/"
    else
        rsync -a --exclude=.venv --exclude=build --exclude=dist --exclude=__pycache__ \
            --exclude='*.egg-info' --exclude=.pytest_cache --exclude=.ruff_cache ./ "$1/"
    fi
}

# The cached tree of RELEASE with the build dependencies.
build_tree() {  # build_tree RELEASE -> prints the tree's path
    local rel=$1 key dir t0=$SECONDS
    key=$(echo "$rel $(debian_mirror) $TREE_PACKAGES $TREE_RECIPE" | sha256sum | cut -c1-12)
    dir=$BUILD_CACHE/tree-$rel-$key
    if [ -f "$dir/.complete" ] && [ -n "$(find "$dir/.complete" -mtime +"$TREE_MAX_AGE")" ]; then
        echo "build-deb: $dir is over $TREE_MAX_AGE days old; making it anew" >&2
        rm -rf "$dir"
    fi
    if [ ! -f "$dir/.complete" ]; then
        echo "build-deb: debootstrap $rel into $dir (once; cached for later builds)" >&2
        make_tree "$rel" "" "$dir" "$BUILD_CACHE/debootstrap-$rel.log" "" "$TREE_PACKAGES" >&2 ||
            exit 1
        # Trees of an older recipe are no longer used.
        find "$BUILD_CACHE" -maxdepth 1 -name "tree-$rel-*" ! -name "tree-$rel-$key" \
            -exec rm -rf {} +
        echo "build-deb: $rel tree made in $((SECONDS - t0))s ($(du -sh "$dir" | cut -f1))" >&2
    fi
    # Mount points for the build directory and pip's cache (the tree runs read-only).
    mkdir -p "$dir/build" "$dir/root/.cache/pip"
    echo "$dir"
}

build_one() {  # build_one RELEASE
    local rel=$1 tag version work src log deb tree='' in_tree=0
    tag=$(release_tag "$rel")
    version=$base_version~$tag
    work=build/deb/$rel
    src=$work/kbackupd-$version
    rm -rf "$work"
    mkdir -p "$src"
    copy_source "$src"

    # The top changelog entry names this build's version and release.
    if [ "$base_version" != "$changelog_version" ]; then
        {
            echo "kbackupd ($base_version) $rel; urgency=medium"
            echo
            echo "  * Rebuild as $base_version."
            echo
            echo " -- $(dpkg-parsechangelog -SMaintainer)  $(date -R)"
            echo
            cat debian/changelog
        } >"$src/debian/changelog"
    fi
    sed -i "1s/^kbackupd ([^)]*) [^;]*;/kbackupd ($version) $rel;/" "$src/debian/changelog"
    # One pinned set for every release unless a release needs its own (a pin without wheels
    # for its Python): packaging/requirements-RELEASE.txt then replaces requirements.txt.
    if [ -f "packaging/requirements-$rel.txt" ]; then
        cp "packaging/requirements-$rel.txt" "$src/packaging/requirements.txt"
    fi

    if ! on_host "$rel"; then
        in_tree=1
        tree=$(build_tree "$rel")
    fi
    # Run a command in the build directory, on this machine or in the release's tree (read-only;
    # the build directory and pip's download cache are bound into it, and this machine's CA
    # bundle, so that pip in the tree trusts what pip here trusts, e.g. a TLS-inspecting proxy).
    in_env() {
        if [ $in_tree = 0 ]; then
            (cd "$work" && "$@")
        else
            mkdir -p "$BUILD_CACHE/pip"
            systemd-nspawn -q -D "$tree" --read-only --register=no --keep-unit --as-pid2 --pipe \
                --machine="kbackup-build-$rel" \
                --bind="$root/$work:/build" --bind="$BUILD_CACHE/pip:/root/.cache/pip" \
                --bind-ro=/etc/ssl/certs/ca-certificates.crt \
                --chdir=/build --setenv=LANG=C.UTF-8 --setenv=HOME=/root \
                --setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@" </dev/null
        fi
    }

    # Binary-only, unsigned. The log goes to a file; on failure show its end.
    log=$root/$work/build.log
    echo "build-deb: building kbackupd $version for $rel" \
        "$([ $in_tree = 1 ] && echo "in $tree" || echo "on this machine (KBACKUP_BUILD_ON_HOST=1)")" \
        "(log: $work/build.log)"
    if ! in_env sh -c "cd kbackupd-$version && dpkg-buildpackage -us -uc -b" >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "build-deb: dpkg-buildpackage failed; full log in $work/build.log" >&2
        exit 1
    fi
    grep -E '^(check-venv|finish-venv)' "$log" || true

    deb=kbackupd_${version}_${arch}.deb
    if [ "${LINTIAN:-1}" != 0 ]; then
        # Errors and warnings fail the build; the only accepted ones are overridden, with
        # reasons, in debian/kbackupd.lintian-overrides. Info tags are shown, not fatal.
        echo "build-deb: lintian $deb ($rel's lintian)"
        in_env lintian --fail-on error,warning --display-info "$deb"
        echo "build-deb: lintian clean"
    fi

    # The unit as packaged: its exposure score must stay at or below 2.0 (--threshold counts
    # tenths), by the release's own systemd-analyze. deb-test.sh checks it again on the
    # installed unit, together with `systemd-analyze verify`, which needs the package's files
    # in place to check ExecStart= and the man pages.
    rm -rf "$work/unit"
    dpkg-deb -x "$work/$deb" "$work/unit"
    unit=$(cd "$work" && find unit -path '*/systemd/system/kbackupd.service' | head -1)
    [ -n "$unit" ] || { echo "build-deb: no kbackupd.service in $deb" >&2; exit 1; }
    echo "build-deb: $rel unit: $(grep -E '^Type=' "$work/$unit")" \
        "$(grep -q '^ExecReload=' "$work/$unit" && echo "with ExecReload=" || echo "without ExecReload=")"
    in_env systemd-analyze security --offline=yes --threshold=20 --no-pager "$unit" | tail -1

    mv "$work/$deb" dist/
    mv "$work/kbackupd_${version}_${arch}".{buildinfo,changes} dist/ 2>/dev/null || true
    echo "build-deb: dist/$deb ($(du -h "dist/$deb" | cut -f1))"
}

# The scheme's promise (packaging/releases.sh): the same version built for a later release
# sorts higher, so a machine upgraded to that release takes its build.
previous=
for rel in $KBACKUP_RELEASES; do
    if [ -n "$previous" ]; then
        dpkg --compare-versions "$base_version~$(release_tag "$rel")" gt \
            "$base_version~$(release_tag "$previous")" ||
            { echo "build-deb: $rel's version does not sort after $previous's" >&2; exit 1; }
    fi
    previous=$rel
done

for rel in $releases; do
    t0=$SECONDS
    build_one "$rel"
    echo "build-deb: $rel done in $((SECONDS - t0))s"
done
