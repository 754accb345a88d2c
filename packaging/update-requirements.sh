#!/usr/bin/env bash
# Regenerate packaging/requirements.txt: the exact, hashed dependency set that the .deb's
# virtualenv is built from. Run it after changing `dependencies` in pyproject.toml, review
# the diff, commit it. The package build itself never resolves versions.
set -euo pipefail
cd "$(dirname "$0")/.."

# The package's venv runs Debian's /usr/bin/python3, so resolve for that interpreter, not for
# whatever python3 is first on PATH (pyenv on developer machines). One set serves every
# release: this resolves with bookworm's 3.11 (the oldest), and the hashes cover every file
# of each pinned version, so trixie's 3.13 build installs the cp313 wheels of the same pins.
# `make deb` builds each release with its own Python and fails on a pin without a wheel (or
# hash) for it, or on a dependency the other Python needs (pip check); such a release gets
# its own packaging/requirements-RELEASE.txt, which build-deb.sh uses instead.
PY=/usr/bin/python3
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT

# Resolve against PyPI only: a machine-wide pip.conf (local wheel caches, extra indexes,
# constraints) must not leak into what every installation of the package will run.
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT 2>/dev/null || true

"$PY" -m venv "$tool/venv"
"$tool/venv/bin/pip" install -q --upgrade pip pip-tools
# --strip-extras: pip's hash-checking mode wants plain pins; psycopg[binary] still brings
# psycopg-binary because pip-compile lists it as its own pinned requirement.
compile() {  # compile OUTPUT INPUT... [extra pip-compile options]
    local out=$1
    shift
    "$tool/venv/bin/pip-compile" --quiet --generate-hashes --strip-extras --no-emit-index-url \
        --resolver=backtracking --output-file "$out" "$@" 2>/dev/null
    # The header pip-compile writes names a temporary path: say how to regenerate instead,
    # and make hash checking explicit in the file itself (pip honours option lines), so the
    # install fails on any entry without a hash even if someone edits the file by hand.
    sed -i 's|^#    pip-compile .*|#    packaging/update-requirements.sh|' "$out"
    sed -i '0,/^[a-z]/s//--require-hashes\n&/' "$out"
    echo "$out: $(grep -c '^[a-z]' "$out") pinned packages"
}
# --allow-unsafe: setuptools is exactly what this file is for.
compile packaging/build-requirements.txt packaging/build-requirements.in --allow-unsafe
# Runtime dependencies: pyproject.toml's [project.dependencies], nothing from the test extra.
compile packaging/requirements.txt pyproject.toml
