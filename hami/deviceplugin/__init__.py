"""The node agent (`hami device-plugin`): the kubelet device plugin (v1beta1 gRPC on a unix
socket), node registration, node config, Allocate (MIG instances made real at the decided
placement, hami-core limits), the MIG lifecycle, health and metrics. See docs/device-plugin.md.

Modules: `agent` (wiring, `serve`), `server` (gRPC service, Register, kubelet restarts),
`allocate`, `lifecycle` (reconciliation rounds), `register` (annotations, device IDs),
`inventory` (NVML reads), `config` (node config), `metrics` (HTTP endpoint), `pods`, `state`,
`options`; `v1beta1/` (our `.proto` and its committed stubs).

Imports api, devices, mig, nvml and k8s; never the scheduler or the simulator.
"""
