"""Stage 4, index: the NeighborIndex interface, ScaNN and its brute-force twin, per-shard files and cache,
building shard indexes, the index manifest and appending to a kept index.
"""
