"""The worker's clock for deadlines (SLAs, expiry, retention), in milliseconds.

Every pattern with deadlines does its clock work in the batched runner
(:mod:`statekeeper.agents.batched`), between batches, staged like an event's writes.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
