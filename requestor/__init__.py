"""The Python requestor library (arrives with the REST API)."""
