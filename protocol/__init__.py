"""Loam's wire protocol: typed messages, the codec, signed envelopes."""
