"""The kubelet device plugin and node agent: registration, Allocate, realised instances.

Imports api, devices, mig, nvml and k8s; never the scheduler or the simulator.
(Arrives with the node-agent issue.)
"""
