#!/usr/bin/env bash
# finish-venv.sh VENV: check and trim the package's virtualenv, right after dh_virtualenv.
#  1. It must hold exactly the pinned distributions of packaging/requirements.txt and
#     packaging/build-requirements.txt (same versions), plus pip and kbackupd: a dependency
#     that slipped in unpinned, or a pin that was not honoured, breaks the build.
#     And every installed distribution's own requirements must be met (pip check): a
#     dependency added to pyproject.toml but not to requirements.txt (run
#     packaging/update-requirements.sh) breaks the build here, not at import time.
#  2. The build tools (build-requirements.txt, and pip itself) are then removed: they are
#     not needed at run time, and the installed venv is not meant to be changed by hand.
#  3. What is left must be exactly requirements.txt plus kbackupd.
set -euo pipefail
venv=$1
here=$(cd "$(dirname "$0")" && pwd)

# -I: nothing from the environment (PYTHONPATH, user site) is mixed into what is inspected.
check() {  # check STAGE
    "$venv/bin/python" -I - "$1" "$here/requirements.txt" "$here/build-requirements.txt" <<'PY'
import importlib.metadata as md
import re
import sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

def pins(path):
    found = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            found[norm(m[1])] = m[2]
    return found

stage, runtime_file, build_file = sys.argv[1:]
runtime, build = pins(runtime_file), pins(build_file)
if stage == "built":
    expected, extra = {**build, **runtime}, {"pip", "kbackupd"}
elif stage == "build-only":  # print what to remove
    print(" ".join(sorted(set(build) - set(runtime))))
    sys.exit(0)
else:
    expected, extra = runtime, {"kbackupd"}
installed = {norm(d.metadata["Name"]): d.version for d in md.distributions()}

problems = []
for name, version in sorted(expected.items()):
    if name not in installed:
        problems.append(f"missing: {name}=={version}")
    elif installed[name] != version:
        problems.append(f"wrong version: {name} {installed[name]} (pinned {version})")
for name in sorted(set(installed) - set(expected) - extra):
    problems.append(f"not pinned: {name}=={installed[name]}")
for name in sorted(extra - set(installed)):
    problems.append(f"missing: {name}")
if problems:
    print(f"finish-venv ({stage}): the virtualenv does not match the pins:", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print(f"finish-venv ({stage}): {len(installed)} distributions, all as pinned")
PY
}

check built
PIP_CONFIG_FILE=/dev/null "$venv/bin/python" -I -m pip check --disable-pip-version-check ||
    { echo "finish-venv: requirements.txt is out of date with pyproject.toml?" >&2; exit 1; }
# shellcheck disable=SC2046  # one word per distribution name, on purpose
"$venv/bin/python" -I -m pip uninstall --yes --quiet $(check build-only) pip
check final
