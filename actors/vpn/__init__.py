"""Virtual networks of a requestor, and TCP tunnels to services in providers' activities (net-api)."""
