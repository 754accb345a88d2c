"""HTTP/JSON API on the daemon's Unix socket (v1)."""
