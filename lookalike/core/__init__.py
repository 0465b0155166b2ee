"""Contracts at the bottom: what every layer above agrees on.

The export folder's manifest, the embedding store and shard formats, the one task table, the ONNX Runtime session
recipe and the CPU facts. Nothing here imports the exporters, the engine or the analysis.
"""
