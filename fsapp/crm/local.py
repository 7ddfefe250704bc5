"""``kind = "local"``: the customer directory embedded in the storage database."""

from __future__ import annotations

import json
import time
from typing import Any

from fsapp import phones, pins
from fsapp.crm import CRMError, Customer
from fsapp.store import StorageError, Store


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

    def _one(self, where: str, params: tuple[Any, ...], operation: str) -> Customer | None:
        try:
            rows = self.store.customer_rows(where, params)
        except StorageError as exc:
            raise CRMError(str(exc), operation=operation) from exc
        return to_customer(rows[0]) if rows else None

    def find_by_phone(self, phone: str) -> Customer | None:
        key = phones.normalize(phone, self.region) or phone
        return self._one("WHERE id IN (SELECT customer_id FROM customer_phones WHERE phone = ?)", (key,),
                         "find_by_phone")

    def find_by_number(self, number: str) -> Customer | None:
        return self._one("WHERE number = ?", (number,), "find_by_number")

    def verify_pin(self, customer_id: str, pin: str) -> bool:
        try:
            row = self.store.db.one("SELECT pin_hash FROM customers WHERE id = ?", (customer_id,))
        except StorageError as exc:
            raise CRMError(str(exc), operation="verify_pin") from exc
        if not (row and row["pin_hash"]):
            return False
        try:
            return pins.verify_pin(pin, row["pin_hash"])
        except ValueError as exc:  # a peppered hash without the pepper: an error, not a wrong PIN
            raise CRMError(str(exc), operation="verify_pin") from exc

    def balance(self, customer_id: str, invoice_type: str) -> int:
        try:
            row = self.store.db.one("SELECT debt FROM customers WHERE id = ?", (customer_id,))
        except StorageError as exc:
            raise CRMError(str(exc), operation="balance") from exc
        if row is None:
            raise CRMError(f"no customer {customer_id!r}", operation="balance")
        return int(row["debt"])

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
        # No SMS gateway in the embedded directory: the outbox row's result records the request.
        return json.dumps({"sent": True, "mobile": link.get("mobile", "")})

    def ping(self) -> bool:
        return self.store.ping()
