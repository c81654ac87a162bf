"""One pykka actor per subsystem of a node."""
