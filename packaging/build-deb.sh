#!/usr/bin/env bash
# Build the kbackupd .deb into dist/ and check it with lintian: `make deb`.
#
# The build runs in a copy of the source tree (build/deb/), so that debhelper's work files
# and dpkg-buildpackage's outputs (which it writes to the parent directory) never land in
# the working tree.
#
# Environment:
#   DEB_VERSION=V   build version V instead of debian/changelog's (adds a changelog entry
#                   in the copy only); deb-test.sh uses it to make an "upgrade" package.
#   LINTIAN=0       skip the lintian check.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

packaging/build-deps.sh

changelog_version=$(dpkg-parsechangelog -SVersion)
upstream_version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# A native package: its version is the project's, possibly with a +suffix for rebuilds.
case "$changelog_version" in
    "$upstream_version" | "$upstream_version"+*) ;;
    *)
        echo "build-deb: debian/changelog says $changelog_version but pyproject.toml says" \
            "$upstream_version; add a changelog entry" >&2
        exit 1
        ;;
esac
version=${DEB_VERSION:-$changelog_version}
arch=$(dpkg --print-architecture)

work=build/deb
src=$work/kbackupd-$version
rm -rf "$work"
mkdir -p "$src" dist

# Copy what git would: tracked and new files, minus ignored ones (.venv, caches, dist...).
# Outside a git checkout (a release tarball), copy everything but those same directories.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        rsync -a --from0 --files-from=- ./ "$src/"
else
    rsync -a --exclude=.venv --exclude=build --exclude=dist --exclude=__pycache__ \
        --exclude='*.egg-info' --exclude=.pytest_cache --exclude=.ruff_cache ./ "$src/"
fi

if [ "$version" != "$changelog_version" ]; then
    # Prepend an entry so dpkg-buildpackage stamps the requested version.
    {
        echo "kbackupd ($version) bookworm; urgency=medium"
        echo
        echo "  * Rebuild as $version."
        echo
        echo " -- $(dpkg-parsechangelog -SMaintainer)  $(date -R)"
        echo
        cat debian/changelog
    } >"$src/debian/changelog"
fi

# Binary-only, unsigned. The log goes to a file; on failure show its end.
log=$root/$work/build.log
echo "build-deb: building kbackupd $version (log: $work/build.log)"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build-deb: dpkg-buildpackage failed; full log in $work/build.log" >&2
    exit 1
fi
grep -E '^check-venv:' "$log" || true

deb=kbackupd_${version}_${arch}.deb
mv "$work/$deb" dist/
mv "$work"/kbackupd_"${version}"_"${arch}".{buildinfo,changes} dist/ 2>/dev/null || true
echo "build-deb: dist/$deb ($(du -h "dist/$deb" | cut -f1))"

if [ "${LINTIAN:-1}" != 0 ]; then
    # Errors and warnings fail the build; the only accepted ones are overridden, with
    # reasons, in debian/kbackupd.lintian-overrides. Info tags are shown, not fatal.
    echo "build-deb: lintian dist/$deb"
    lintian --fail-on error,warning --display-info "dist/$deb"
    echo "build-deb: lintian clean"
fi

# The unit's exposure score must stay at or below 2.0 (--threshold counts tenths).
# deb-test.sh checks it again on the installed unit, together with `systemd-analyze
# verify`, which needs the package's files in place to check ExecStart= and the man pages.
systemd-analyze security --offline=yes --threshold=20 --no-pager systemd/kbackupd.service |
    tail -1
