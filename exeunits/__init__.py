"""Exe-units: the runtimes that execute work (wasmtime, Docker) in child processes."""
