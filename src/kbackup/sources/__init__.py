"""Sources: what a job backs up. One package per kind (postgres/, files/) holds every verb of
that kind (backup streams, verify, restore planning, restore); registry.py lists the kinds and
base.py defines the driver protocol the jobs call. Kept free of imports: config/jobs.py reads
the registry while the config package is still loading."""
