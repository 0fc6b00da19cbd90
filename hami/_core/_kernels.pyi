# Type stub for the compiled kernels; the pure-Python twin (reference.py) is the spec.
from typing import Any

import numpy as np

class Kernels:
    def __init__(self, st: Any, tb: Any, dyn: Any, policy: int) -> None: ...
    def fit_score(
        self,
        rq: Any,
        nodes: np.ndarray,  # const int32[:]
        out_code: np.ndarray,  # uint8[:]  # OUT
        out_reason: np.ndarray,  # uint32[:]  # OUT
        out_score: np.ndarray,  # int32[:]  # OUT
    ) -> None: ...
    def plan(
        self, rq: Any, node: int, use_idle: bool, picks: list[tuple[int, int, int, int, int]] | None
    ) -> tuple[bool, int, int, int, bool]: ...
