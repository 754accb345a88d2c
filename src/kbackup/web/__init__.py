"""The browser side of kbackupd: dashboard pages, logins and their safeguards.

Nothing here is imported by kbackupctl (its start-up time stays as it is)."""
