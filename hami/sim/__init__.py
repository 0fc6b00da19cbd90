"""The embedded simulator: everything that stands in for what this machine lacks.

- `demo.py`: `hami demo`, the engine on an embedded cluster.
- `traces.py`, `runner.py`, `fillup.py`, `online.py`, `simulate.py`: `hami simulate`, packing
  quality of every policy on the openb trace.
- `apiserver/`, `kubescheduler.py`, `kubelet.py`, `cluster.py`: the local control plane
  (`hami sim up`): a Kubernetes API subset, a kube-scheduler driver and kubelets.
- `fakenvml.py`: the control interface of the simulated libnvidia-ml (native/fakenvml).
- `hollow.py`, `soak.py`: hollow nodes (many light nodes behind one agent, as kubemark's) and the
  10,000-GPU soak through the real scheduler (`python -m hami.sim.soak`, docs/soak.md).

May import every other package of hami; production code never imports it.
"""
