"""When a join's small side travels to every task (a broadcast) and when it is shuffled.

One rule for every stage that joins a table of rejected or repeated rows back to the data:
up to BROADCAST_MAX_ROWS rows (≈100 bytes each: ≈50 MB at the limit, far above real corpora)
are broadcast; more are joined by a shuffle, so no size of input makes the driver hold or
ship a table proportional to the rows.
"""
from __future__ import annotations

BROADCAST_MAX_ROWS = 500_000


def broadcast_ok(rows: int) -> bool:
    """Whether a join's small side of `rows` rows (counted by the caller) is broadcast."""
    return int(rows) <= BROADCAST_MAX_ROWS
