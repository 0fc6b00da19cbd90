"""MIG instance lifecycle on one node: ensure, adopt, reclaim, reconcile.

Imports nvml and devices only. (Arrives with the NVML issue.)
"""
