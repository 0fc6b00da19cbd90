"""The agent's view of its node, shared by Allocate, the reconciler, ListAndWatch and the metrics.

One re-entrant lock serialises everything that changes MIG instances or this view: Allocate
calls (kubelet admits one container at a time anyway; HAMi serialises them too) and the
reconciler's rounds. Readers take copies under the lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from hami.deviceplugin.config import NodeConfig
from hami.deviceplugin.register import GpuPlan
from hami.mig import MigInstance
from hami.nvml import NvmlError


@dataclass
class AgentState:
    node_name: str
    config: NodeConfig
    plans: dict[str, GpuPlan] = field(default_factory=dict)  # registered GPUs by uuid
    instances: tuple[MigInstance, ...] = ()  # as last read from NVML
    owners: dict[str, str] = field(default_factory=dict)  # MIG uuid → "<ns>/<pod>" (live pods)
    owner_uids: dict[str, str] = field(default_factory=dict)  # MIG uuid → that pod's uid
    idle_since: dict[str, datetime] = field(default_factory=dict)  # MIG uuid → when it became idle
    registered: bool = False  # kubelet accepted our Register
    reconciled: bool = False  # the start-up reconciliation finished
    lock: threading.RLock = field(default_factory=threading.RLock)
    changed: threading.Condition = field(default_factory=threading.Condition)  # device list changed
    generation: int = 0  # bumped on every device-list change (ListAndWatch resends)
    nvml_errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (function, code name) → count
    allocations: Counter[str] = field(default_factory=Counter)  # result → count
    lost: int = 0  # MIG instances found lost (reboot, driver reload) since start

    def count_nvml_error(self, exc: NvmlError) -> None:
        with self.lock:
            self.nvml_errors[(exc.function or "unknown", exc.code_name)] += 1

    def bump(self) -> None:
        """Wake every ListAndWatch stream: the device list may have changed."""
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def note_destroyed(self, instances: list[MigInstance] | tuple[MigInstance, ...]) -> None:
        """Instances this agent destroyed: gone from the view, and not reported lost."""
        gone = {i.slot for i in instances}
        with self.lock:
            self.instances = tuple(i for i in self.instances if i.slot not in gone)
            for inst in instances:
                if inst.mig_uuid:
                    self.idle_since.pop(inst.mig_uuid, None)
                    self.owners.pop(inst.mig_uuid, None)
                    self.owner_uids.pop(inst.mig_uuid, None)

    def note_created(self, instance: MigInstance) -> None:
        with self.lock:
            self.instances = (*(i for i in self.instances if i.slot != instance.slot), instance)

    @property
    def ready(self) -> bool:
        return self.registered and self.reconciled


__all__ = ["AgentState"]
