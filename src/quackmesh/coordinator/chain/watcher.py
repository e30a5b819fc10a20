"""The chain watcher: a daemon thread that applies Vault events, expires vouchers and
posts the balance root each epoch, every ``chain_poll_s``, until the coordinator stops.

Everything it does is idempotent and restart-safe: the scan cursor is committed with the
credits it covers, a voucher expires once, and an epoch left ``pending`` by a crash is
posted (or found already on chain) at the next start.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import func, select

from quackmesh.coordinator.chain import service
from quackmesh.coordinator.chain.link import ChainLink
from quackmesh.coordinator.db.models import WithdrawalVoucher
from quackmesh.coordinator.runtime import Runtime

__all__ = ["ChainWatcher", "watch_once"]

log = logging.getLogger("quackmesh.coordinator.chain")


def _vouchers_past_expiry(rt: Runtime, link: ChainLink, now: float) -> int:
    with rt.reads() as session:
        count = session.scalar(
            select(func.count())
            .select_from(WithdrawalVoucher)
            .where(
                WithdrawalVoucher.state == "pending",
                WithdrawalVoucher.vault == link.vault_address,
                WithdrawalVoucher.expiry < int(now),
            )
        )
    return int(count or 0)


def watch_once(rt: Runtime, link: ChainLink, *, now: float | None = None) -> None:
    """One pass: events in, expired vouchers back, the epoch's root out."""
    t = time.time() if now is None else now
    if link.local and _vouchers_past_expiry(rt, link, t):
        link.mine()  # nobody else moves the in-process chain's clock
    service.sync(rt, link, now=t)
    service.expire_vouchers(rt, link, now=t)
    service.close_epoch(rt, link, now=t)


class ChainWatcher:
    def __init__(self, rt: Runtime, link: ChainLink) -> None:
        self.rt, self.link = rt, link
        self._thread = threading.Thread(target=self._loop, name="quackmesh-chain", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.rt.stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self.rt.stop.wait(self.rt.settings.chain_poll_s):
            try:
                watch_once(self.rt, self.link)
            except Exception:
                log.exception("chain watcher pass failed; retrying next interval")
