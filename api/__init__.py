"""meshcast's outer interfaces: the command line (and, beside it, the service and client)."""
