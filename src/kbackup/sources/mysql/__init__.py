"""The MariaDB / MySQL source kind (`[[mysql]]`): each database a mariadb-dump SQL stream, its
rows counted as the dump passes; see docs/format.md, component kind "mysql"."""
