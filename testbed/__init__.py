"""meshcast testbed: an emulated multi-host cluster (network namespaces, tc-limited links) to
run plans on real NIC limits and check the port-v1 model against measurements."""
