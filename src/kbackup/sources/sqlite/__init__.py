"""SQLite databases as a source kind: `[[sqlite]]` in a job. config.py (the table),
snapshot.py (the online copy and what it holds), stream.py (the backup stream), meta.py (what
the manifest records), check.py (structure, restore-test), restore.py (planning, the atomic
replace), holders.py (which processes have a file open), driver.py (the verbs)."""
