"""kbackupctl's pieces; kbackup.cli wires them to the command line."""
