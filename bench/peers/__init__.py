"""Peer servers the harness measures ours against, each runnable as ``python -m bench.peers.NAME``."""
