#!/usr/bin/python3
"""check-backup.py DIR: DIR is one backup (the directory holding manifest.json). Exit 0 if
every object the manifest lists is there with the recorded size and SHA-256 (and its
signature when it says it is signed) and nothing else is; print one line per component,
kind and file, for the caller to use."""

import hashlib
import json
import sys
from pathlib import Path

backup = Path(sys.argv[1])
manifest = json.loads((backup / "manifest.json").read_text())
listed = {"manifest.json"}
problems = []
if manifest.get("signature"):  # signed: its detached signature lies beside it (format.md)
    listed.add("manifest.json.sig")
    if not (backup / "manifest.json.sig").is_file():
        problems.append("manifest.json.sig: missing (the manifest says it is signed)")
for component in manifest["components"]:
    objects = [component] + ([component["index"]] if component.get("index") else [])
    for obj in objects:
        path = backup / obj["file"]
        listed.add(obj["file"])
        if not path.is_file():
            problems.append(f"{obj['file']}: missing")
            continue
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        if path.stat().st_size != obj["size_bytes"]:
            problems.append(f"{obj['file']}: size {path.stat().st_size} != {obj['size_bytes']}")
        if digest.hexdigest() != obj["sha256"]:
            problems.append(f"{obj['file']}: sha256 differs from the manifest")
    print(component["kind"], component["name"], component["file"])
extra = sorted(p.name for p in backup.iterdir() if p.name not in listed)
if extra:
    problems.append(f"files the manifest does not list: {', '.join(extra)}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
