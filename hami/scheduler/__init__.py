"""The scheduler extender (/filter, /prioritize, /bind, /webhook), its cache and metrics.

Imports api, devices, _core and k8s; never NVML, the device plugin or the simulator.
(Arrives with the scheduler issue.)
"""
