"""``kind = "local"``: the customer directory embedded in the storage database."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from fsapp import log as logmod
from fsapp import phones, pins
from fsapp.crm import RECORDED, CRMError, Customer
from fsapp.store import StorageError, Store

T = TypeVar("T")


def to_customer(row: dict[str, Any]) -> Customer:
    return Customer(
        id=row["id"], number=row["number"], name=row["name"], type=row["type"], mobile=row["mobile"],
        phones=tuple(row.get("phones", ())),
        responsible={role: row[role] for role in ("sales", "support", "other") if row.get(role)},
    )


class LocalCRM:
    """The embedded directory: same interface as the HTTP CRM, answered from the store."""

    kind = "local"

    def __init__(self, store: Store, *, region: str = "IR") -> None:
        self.store = store
        self.region = region

    def _read(self, operation: str, read: Callable[[], T]) -> T:
        """A store read; a storage failure is the CRM's failure to answer ``operation``."""
        try:
            return read()
        except StorageError as exc:
            raise CRMError(str(exc), operation=operation) from exc

    def find_by_phone(self, phone: str) -> Customer | None:
        key = phones.normalize(phone, self.region) or phone
        row = self._read("find_by_phone", lambda: self.store.customer_by_phone(key))
        return to_customer(row) if row else None

    def find_by_number(self, number: str) -> Customer | None:
        row = self._read("find_by_number", lambda: self.store.customer_by_number(number))
        return to_customer(row) if row else None

    def verify_pin(self, customer_id: str, pin: str) -> bool:
        pin_hash = self._read("verify_pin", lambda: self.store.pin_hash(customer_id))
        if not pin_hash:
            return False
        try:
            ok = pins.verify_pin(pin, pin_hash)
        except ValueError as exc:  # a peppered hash without the pepper: an error, not a wrong PIN
            raise CRMError(str(exc), operation="verify_pin") from exc
        if ok:
            self._rehash(customer_id, pin, pin_hash)
        return ok

    def _rehash(self, customer_id: str, pin: str, old: str) -> None:
        """A right PIN whose hash predates the pepper gets a peppered one (a failure is only logged:
        the caller typed the right PIN, and the old hash still verifies)."""
        new = pins.rehashed(pin, old)
        if new is None:
            return
        log = logmod.get("fsapp").bind(component="crm", customer_id=customer_id)
        try:
            if self.store.replace_pin_hash(customer_id, old, new):
                log.info("pin_rehashed", algorithm=new.partition("$")[0])
        except StorageError as exc:
            log.warning("pin_rehash_failed", reason=str(exc))

    def balance(self, customer_id: str, invoice_type: str) -> int:
        debt = self._read("balance", lambda: self.store.debt(customer_id))
        if debt is None:
            raise CRMError(f"no customer {customer_id!r}", operation="balance")
        return debt

    def register(self, phone: str) -> Customer:
        key = phones.normalize(phone, self.region) or phone
        existing = self.find_by_phone(phone)
        if existing is not None:
            return existing
        cid = "U-" + time.strftime("%y%m%d") + "-" + key.lstrip("+")[-10:]
        try:
            self.store.upsert_customer({"id": cid, "number": cid, "name": "", "type": "unknown"}, [key])
        except StorageError as exc:
            raise CRMError(str(exc), operation="register") from exc
        return Customer(id=cid, number=cid, name="", type="unknown", mobile="", phones=(key,))

    def create_invoice(self, invoice: dict[str, Any], idempotency_key: str) -> str:
        # The local ledger row is the invoice; nothing else to deliver.
        return idempotency_key

    def send_payment_link(self, link: dict[str, Any], idempotency_key: str) -> str:
        """Nothing is sent (no SMS gateway here): the outbox row is marked ``recorded``, not delivered."""
        return f"{RECORDED}the local CRM sends no payment link (mobile {link.get('mobile', '')})"

    def ping(self) -> bool:
        return self.store.ping()
