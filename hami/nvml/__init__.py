"""ctypes binding over NVML's MIG subset; the only package that loads libnvidia-ml.

Imports the standard library only. (Arrives with the NVML issue.)
"""
