"""Container images for the vm exe-unit tests (build.sh) and the helpers that build and serve them."""
