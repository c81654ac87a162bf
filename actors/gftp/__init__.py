"""gftp: files published by a node and fetched over Loam's network, and upload slots for the other way."""
