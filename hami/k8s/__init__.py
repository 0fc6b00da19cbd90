"""The one place that talks to the Kubernetes API (official `kubernetes` client).

(Arrives with the local control plane and scheduler issues.)
"""
