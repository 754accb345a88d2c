"""PostgreSQL as a source kind: `[[postgres]]` in a job. config.py (the table), dump.py
(pg_dump and pg_dumpall streams), pgtools.py (logins, databases, pg_restore), meta.py (what
the manifest records), check.py (structure, restore-test), plan.py and restore.py, driver.py
(the verbs). The "globals" component (roles, tablespaces) belongs here too."""
