"""kbackup: scheduled, verified PostgreSQL + file backups for small business servers."""

__version__ = "0.1.0"
