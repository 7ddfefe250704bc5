"""Rating: talk seconds -> units -> rial. Pure integer arithmetic, never floats.

Talk seconds are whole seconds of FreeSWITCH-timestamped bridged time, rounded
down as FreeSWITCH's own ``billsec`` is; any started interval is charged whole.
"""

from __future__ import annotations

# The largest amount (rial) a debt, a limit or a charge may be: the ledger keeps amounts
# in BIGINT columns and the CRM receives them as JSON numbers, which many readers hold in a
# double; 10**15 is below 2**53, so every amount up to it is exact in both.
MAX_RIAL = 10**15
# A charge is units * amount_per_interval, and a talk lasts at most [server]
# call_timeout_seconds (at most a day): 1440 one-minute units of this stay under MAX_RIAL.
MAX_AMOUNT_PER_INTERVAL = 10**12


def talk_seconds(start_us: int, end_us: int) -> int:
    """Whole seconds between two FreeSWITCH timestamps (microseconds); 0 if not ordered."""
    if not start_us or end_us <= start_us:
        return 0
    return (end_us - start_us) // 1_000_000


def units(seconds: int, interval_minutes: int) -> int:
    """Started intervals: ceil(seconds / (60 * interval_minutes))."""
    if interval_minutes <= 0:
        raise ValueError("interval_minutes must be positive")
    if seconds <= 0:
        return 0
    interval = 60 * interval_minutes
    return -(-seconds // interval)


def charge(seconds: int, interval_minutes: int, amount_per_interval: int) -> tuple[int, int]:
    """(units, amount in rial) for ``seconds`` of talk."""
    if not isinstance(amount_per_interval, int) or isinstance(amount_per_interval, bool):
        raise TypeError("amount_per_interval is an integer number of rial")
    n = units(seconds, interval_minutes)
    return n, n * amount_per_interval
