"""The embedded simulator: the engine-level demo now; the local control plane (API server,
kube-scheduler driver, kubelet on fakenvml), trace replay and policy comparison next.

May import every other package of hami; production code never imports it.
"""
