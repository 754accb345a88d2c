"""The work the daemon runs: backup now; verify, restore and prune follow the same shape."""
