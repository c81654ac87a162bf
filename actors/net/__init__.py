"""The network actor: ZeroMQ links, the overlay, direct messages and gossip."""
