"""File trees as a source kind: `[[files]]` in a job. config.py (the table), tree.py (the tar
stream and its file index), meta.py (what the manifest records), check.py (structure,
restore-test), restore.py (planning and extraction), driver.py (the verbs)."""
