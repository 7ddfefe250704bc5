"""The `payamgostar` CRM kind: Payamgostar (پیام‌گستر) through its published web services.

Each operation uses the interface whose request and response shapes are published
(docs/payamgostar.md names the sources and says what is verified and what is assumed):

- login: REST `POST /api/v2/auth/login` (username, password, device id) gives a bearer
  token, kept until shortly before its `expiresAt`; a REST call answered 401 logs in
  again and is retried once.
- identities (by phone, by customer number, by id for the PIN and the balance), the
  users' extensions, payment links and the health check: the SOAP services under
  `/services/api/` that telephony products use (`IIdentity`, `IUser`, `IEpay`). They
  carry the username and password inside each request instead of a token.
- register: REST `POST /api/v2/crmobject/person/create`.
- product prices (a stranger's payment link without an invoice amount): SOAP `IProduct`.
- invoices: REST `POST /api/v2/crmobject/invoice/sales/find` (by refId, so a retry does
  not make a second invoice) and `.../invoice/sales/create`.
- call log: REST `/api/v1/telephony/call` and `/api/v1/telephony/channel`.

The request machinery is HttpCRM's: connect and read timeouts, one deadline for the
whole operation (logins and lookups of extensions included), a body size limit, no
redirects, the circuit breaker, `crm_request`/`crm_failed` events and the metrics hook.
Every failure is a CRMError naming the operation. Logs never carry the password, the
token, a PIN or a body.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import gevent.lock
import phonenumbers
import requests
import structlog
from requests.auth import AuthBase

from fsapp import instants, phones
from fsapp.crm import CRMError, Customer
from fsapp.crm.http import HttpCRM, OnResult, _encode, _idempotency, _section_values

log = structlog.get_logger("fsapp.crm")

LOGIN_PATH = "/api/v2/auth/login"
PERSON_CREATE_PATH = "/api/v2/crmobject/person/create"
INVOICE_FIND_PATH = "/api/v2/crmobject/invoice/sales/find"
INVOICE_CREATE_PATH = "/api/v2/crmobject/invoice/sales/create"
CALL_PATH = "/api/v1/telephony/call"
CHANNEL_PATH = "/api/v1/telephony/channel"
SOAP_PATH = "/services/api/{service}.svc"

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_CALL_NS = "http://tempuri.org/"
DATA_NS = "http://schemas.datacontract.org/2004/07/Septa.PayamGostar.ServiceLayer.Contract.PGContracts.DataContracts"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

# Payamgostar's telephony enums: PhoneCallType, ChannelResponse, ChannelStatus, TelephonySystemPeerType.
CALL_MISSED, CALL_RECEIVED, CALL_OUTGOING = 1, 2, 3
RESPONSE_NOT_ANSWERED, RESPONSE_ANSWERED, RESPONSE_BUSY, RESPONSE_TRANSFERRED = 1, 2, 3, 4
CHANNEL_HANGUP = 4
PEER_EXTENSION, PEER_TRUNK = 1, 2

# The identity's Sale/Support/Other responsible users, by fsapp role.
RESPONSIBLE_FIELDS = (("sales", "SaleUsername"), ("support", "SupportUsername"), ("other", "OtherUsername"))

# Identity fields `customer_number_field` and `type_field` may name; any other name is
# read from the identity's extended properties (custom fields) by user key.
IDENTITY_FIELDS = frozenset(
    {"CustomerNumber", "Classification", "ColorName", "IdentityType", "SourceType", "CrmObjectTypeName",
     "CrmObjectTypeCode", "NickName", "NationalCode", "RefId"}
)

# Journal statuses in which the IVR or a person answered an inbound call.
ANSWERED_STATUSES = frozenset({"answered", "completed", "transferred"})

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CUSTOMER_NUMBER = re.compile(r"[0-9A-Za-z_./-]{1,64}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN_MARGIN_SECONDS = 30.0
_MEMO_SIZE = 4096
_EXTENSION_CACHE_SIZE = 10_000
_REFUSED_QUERY_STATUSES = frozenset({400, 404, 405, 415, 422})

_TUNING_KEYS = ("timeout_seconds", "connect_timeout_seconds", "breaker_threshold", "breaker_cooldown_seconds",
                "max_body_bytes", "pool_size")
_STRING_KEYS = ("device_id", "pin_field", "customer_number_field", "type_field", "telephony_key", "trunk_name",
                "invoice_type", "person_type_code", "phone_format", "region")
_KNOWN_KEYS = frozenset(
    {"kind", "url", "token_env", "extra", "username", "password_env", "platform_type", "payment_link_expire_days",
     "extension_cache_seconds", *_TUNING_KEYS, *_STRING_KEYS}
)


class _SessionAuth(AuthBase):
    """The session's auth: keeps .netrc out and gives SOAP requests SOAP's content type.

    REST calls carry `Authorization: Bearer` per request (the token changes over time);
    SOAP calls carry the credentials in the envelope and are marked by `SOAPAction`.
    """

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if "SOAPAction" in r.headers:
            r.headers["Content-Type"] = "text/xml; charset=utf-8"
            r.headers["Accept"] = "text/xml"
        return r


class _Identity:
    """One identity (person or organization) as the SOAP IIdentity service returns it."""

    def __init__(self, crm_id: str, fields: dict[str, str], extended: dict[str, str],
                 phones_: list[tuple[str, bool]]) -> None:
        self.crm_id = crm_id
        self.fields = fields
        self.extended = extended
        self.phones = phones_

    def value(self, name: str) -> str:
        """A built-in identity field by name, or else an extended property by user key."""
        if name in IDENTITY_FIELDS:
            return self.fields.get(name, "")
        return self.extended.get(name, "")


class PayamgostarCRM(HttpCRM):
    """A CRM reached through Payamgostar's REST and SOAP web services."""

    kind = "payamgostar"

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        device_id: str = "fsapp",
        platform_type: int = 1,
        pin_field: str = "",
        customer_number_field: str = "CustomerNumber",
        type_field: str = "Classification",
        telephony_key: str = "",
        trunk_name: str = "fsapp",
        invoice_type: str = "",
        person_type_code: str = "",
        payment_link_expire_days: int = 7,
        phone_format: str = "national",
        extension_cache_seconds: float = 300.0,
        region: str = "IR",
        timeout_seconds: float = 3.0,
        connect_timeout_seconds: float = 1.0,
        breaker_threshold: int = 5,
        breaker_cooldown_seconds: float = 30.0,
        max_body_bytes: int = 1_000_000,
        pool_size: int = 50,
        on_result: OnResult | None = None,
    ) -> None:
        # HttpCRM wants a static token; this kind logs in instead, so the session's auth
        # is replaced below and each REST request carries the current token itself.
        super().__init__(
            url, "login", timeout_seconds, connect_timeout_seconds, breaker_threshold, breaker_cooldown_seconds,
            max_body_bytes, pool_size=pool_size, on_result=on_result,
        )
        self._session.auth = _SessionAuth()
        if not isinstance(username, str) or not username.strip():
            raise ValueError("crm.username: missing")
        if not isinstance(password, str) or not password:
            raise ValueError("crm.password_env: the password is empty")
        if not isinstance(device_id, str) or not device_id.strip():
            raise ValueError("crm.device_id: must be a non-empty string")
        if isinstance(platform_type, bool) or not isinstance(platform_type, int) or platform_type < 0:
            raise ValueError("crm.platform_type: must be an integer >= 0")
        for key, value in (("pin_field", pin_field), ("customer_number_field", customer_number_field),
                           ("type_field", type_field)):
            if value and not (isinstance(value, str) and _FIELD_NAME.fullmatch(value)):
                raise ValueError(f"crm.{key}: must be a field name or user key (letters, digits, _)")
        if not customer_number_field:
            raise ValueError("crm.customer_number_field: must not be empty")
        if isinstance(payment_link_expire_days, bool) or not isinstance(payment_link_expire_days, int) or not (
            1 <= payment_link_expire_days <= 365
        ):
            raise ValueError("crm.payment_link_expire_days: must be an integer from 1 to 365")
        if phone_format not in ("national", "e164"):
            raise ValueError("crm.phone_format: must be \"national\" or \"e164\"")
        if isinstance(extension_cache_seconds, bool) or not isinstance(extension_cache_seconds, (int, float)) or (
            extension_cache_seconds < 0
        ):
            raise ValueError("crm.extension_cache_seconds: must be a number >= 0")
        if not isinstance(region, str) or phonenumbers.country_code_for_region(region) == 0:
            raise ValueError("crm.region: not a known region code")
        self.username = username.strip()
        self._password = password
        self.device_id = device_id.strip()
        self.platform_type = platform_type
        self.pin_field = pin_field
        self.customer_number_field = customer_number_field
        self.type_field = type_field
        self.telephony_key = telephony_key.strip()
        self.trunk_name = trunk_name.strip() or "fsapp"
        self.invoice_type = invoice_type.strip()
        self.person_type_code = person_type_code.strip()
        self.payment_link_expire_days = payment_link_expire_days
        self.phone_format = phone_format
        self.extension_cache_seconds = float(extension_cache_seconds)
        self.region = region
        self._token = ""
        self._token_expires: float | None = None
        # gevent's: the daemon patches sockets, not threads, so a plain threading.Lock held
        # across the login's requests would block the whole event loop in acquire().
        self._token_lock = gevent.lock.Semaphore()
        self._extensions: dict[str, tuple[str, float]] = {}
        self._done: OrderedDict[str, str] = OrderedDict()
        self._call_progress: OrderedDict[str, dict[str, int]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<PayamgostarCRM {self.url} as {self.username}>"

    @classmethod
    def from_config(
        cls,
        section: Mapping[str, object] | object,
        *,
        environ: Mapping[str, str] | None = None,
        on_result: OnResult | None = None,
    ) -> PayamgostarCRM:
        """Build from the `[crm]` table: `url`, `username`, `password_env` and optional keys.

        `section` is the table as a mapping, or the config's CRM dataclass whose `extra`
        mapping holds the keys of this kind. The password is read from the environment
        variable `password_env` names. Raises ValueError naming the key.
        """
        values = _section_values(section)
        env = os.environ if environ is None else environ
        unknown = sorted(key for key in values if key not in _KNOWN_KEYS)
        if unknown:
            raise ValueError(f"crm.{unknown[0]}: unknown key for kind \"payamgostar\"")
        if values.get("token_env"):
            raise ValueError("crm.token_env: not used by kind \"payamgostar\"; set crm.username and crm.password_env")
        url = _string(values, "url")
        if not url:
            raise ValueError("crm.url: missing")
        username = _string(values, "username")
        if not username.strip():
            raise ValueError("crm.username: missing (the Payamgostar user fsapp logs in as)")
        password_env = _string(values, "password_env")
        if not password_env:
            raise ValueError("crm.password_env: missing (name of the variable holding the password)")
        password = env.get(password_env, "")
        if not password:
            raise ValueError(f"crm.password_env: environment variable {password_env} is not set or empty")
        options: dict[str, Any] = {key: values[key] for key in _TUNING_KEYS if values.get(key) is not None}
        for key in _STRING_KEYS:
            if values.get(key) is not None:
                options[key] = _string(values, key)
        for key in ("platform_type", "payment_link_expire_days"):
            if values.get(key) is not None:
                options[key] = values[key]
        if values.get("extension_cache_seconds") is not None:
            options["extension_cache_seconds"] = values["extension_cache_seconds"]
        return cls(url, username, password, on_result=on_result, **options)

    # -- the contract ---------------------------------------------------------------

    def find_by_phone(self, phone: str) -> Customer | None:
        """IIdentity.FindIdentityByPhoneNumber; None when no identity has this number."""
        op = "find_by_phone"
        number = phones.normalize(phone, self.region) if isinstance(phone, str) else None
        if not number:
            return None

        def run(deadline: float) -> Customer | None:
            identity = self._identity_by_phone(op, number, deadline)
            return None if identity is None else self._customer(op, identity, deadline)

        return self._call(op, run)

    def find_by_number(self, number: str) -> Customer | None:
        """IIdentity.SearchIdentity on the customer number field; None when none matches."""
        op = "find_by_number"
        if not isinstance(number, str) or not _CUSTOMER_NUMBER.fullmatch(number.strip()):
            raise CRMError("customer number has characters a Payamgostar query cannot carry", operation=op)
        query = f'{self.customer_number_field}=="{number.strip()}"'

        def run(deadline: float) -> Customer | None:
            result = self._soap(op, "IIdentity", "SearchIdentity", [
                ("userName", self.username), ("password", self._password), ("typeKey", ""), ("query", query),
            ], deadline)
            if result is None or not _success(result):
                log.warning("crm_lookup_unsuccessful", operation=op)
                return None
            found = _items(result, "IdentityInfoList")
            if not found:
                return None
            return self._customer(op, _identity(op, found[0]), deadline)

        return self._call(op, run)

    def verify_pin(self, customer_id: str, pin: str) -> bool:
        """Compare the PIN with the identity's `pin_field` extended property."""
        op = "verify_pin"
        if not self.pin_field:
            raise CRMError("crm.pin_field is not set: no identity field holds the phone PIN", operation=op)
        identity_id = _guid(op, customer_id)

        def run(deadline: float) -> bool:
            identity = self._identity_by_id(op, identity_id, deadline)
            if identity is None:
                return False
            stored = identity.value(self.pin_field).strip()
            given = pin.strip() if isinstance(pin, str) else ""
            if not stored or not given:
                return False
            return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))

        return self._call(op, run)

    def balance(self, customer_id: str, invoice_type: str) -> int:
        """The identity's debt in rial: minus its Balance (a negative Balance is owed).

        Payamgostar keeps one balance per identity, so `invoice_type` does not narrow it.
        """
        op = "balance"
        identity_id = _guid(op, customer_id)

        def run(deadline: float) -> int:
            identity = self._identity_by_id(op, identity_id, deadline)
            if identity is None:
                raise CRMError("no identity with this id", operation=op)
            text = identity.fields.get("Balance", "")
            return -_rial(op, text, "Balance is") if text else 0

        return self._call(op, run)

    def product_price(self, product_code: str, invoice_type: str) -> int:
        """The product's price in rial for this invoice type (SOAP IProduct.FindProductByCode).

        The amount of the product's line in a price list whose InvoiceType is the invoice
        type (the module's, else crm.invoice_type); without one, the product's UnitPrice.
        """
        op = "product_price"
        code = product_code.strip() if isinstance(product_code, str) else ""
        if not code:
            raise CRMError("no product code", operation=op)
        type_code = (invoice_type or self.invoice_type).strip()

        def run(deadline: float) -> int:
            result = self._soap(op, "IProduct", "FindProductByCode", [
                ("userName", self.username), ("password", self._password), ("code", code),
            ], deadline)
            products = [] if result is None or not _success(result) else _items(result, "ProductInfoList")
            product = next((p for p in products if _text(p, "Code") == code), None)
            if product is None:
                raise CRMError("no product with this code", operation=op)
            return _price(op, product, code, type_code)

        return self._call(op, run)

    def register(self, phone: str) -> Customer:
        """Create a person for an unknown caller (REST person/create), unless one exists."""
        op = "register"
        number = phones.normalize(phone, self.region) if isinstance(phone, str) else None
        if not number:
            raise CRMError("not a phone number", operation=op)

        def run(deadline: float) -> Customer:
            existing = self._identity_by_phone(op, number, deadline)
            if existing is not None:
                return self._customer(op, existing, deadline)
            return Customer(
                id=self._create_person(op, number, deadline), number="", name=phones.to_national(number, self.region),
                type="", mobile=number if phones.is_mobile(number, self.region) else "", phones=(number,),
            )

        return self._call(op, run)

    def _create_person(self, op: str, number: str, deadline: float) -> str:
        """A new person with this E.164 phone (REST person/create); its crmId. Keyed by the number."""
        payload: dict[str, Any] = {
            "nickName": phones.to_national(number, self.region),
            "phoneContacts": [{"phoneNumber": self._crm_phone(number), "default": True}],
            "refId": f"fsapp-{number}",
            "description": "registered by fsapp from an incoming call",
        }
        if self.person_type_code:
            payload["crmObjectTypeCode"] = self.person_type_code
        headers = _idempotency(op, f"register-{number}")
        body = self._rest(op, "POST", PERSON_CREATE_PATH, deadline, payload, "person/create", headers=headers)
        return _text_field(op, body, "crmId")

    def _identity_for(self, op: str, number: str, deadline: float) -> str:
        """The id of the identity with this phone, made (as `register` does) when there is none."""
        existing = self._identity_by_phone(op, number, deadline)
        return existing.crm_id if existing is not None else _guid(op, self._create_person(op, number, deadline))

    def create_invoice(self, invoice: dict[str, object], idempotency_key: str) -> str:
        """A sales invoice (REST invoice/sales/create) with refId = the key; returns its crmId.

        Before creating, the invoices with that refId are looked up so a retry after a
        lost answer returns the first invoice instead of making a second one.
        """
        op = "create_invoice"
        headers = _idempotency(op, idempotency_key)
        memo = f"invoice:{idempotency_key}"
        if memo in self._done:
            return self._done[memo]
        type_code = str(invoice.get("invoice_type") or self.invoice_type).strip()
        if not type_code:
            raise CRMError("no invoice type: set the module's invoice_type or crm.invoice_type", operation=op)
        amount = _amount(op, invoice.get("amount"))
        units = invoice.get("units")
        count, unit_price = 1, amount
        if isinstance(units, int) and not isinstance(units, bool) and units > 0 and amount % units == 0:
            count, unit_price = units, amount // units
        call_uuid = str(invoice.get("call_uuid") or "")
        talk = invoice.get("talk_seconds")
        payload: dict[str, Any] = {
            "crmObjectTypeCode": type_code,
            "identityId": _guid(op, invoice.get("customer_id")),
            "refId": idempotency_key,
            "subject": str(invoice.get("product_name") or "fsapp"),
            "description": _invoice_description(call_uuid, talk, invoice),
            "details": [{
                "productCode": str(invoice.get("product_code") or ""),
                "productName": str(invoice.get("product_name") or ""),
                "isService": True,
                "count": count,
                "baseUnitPrice": unit_price,
                "finalUnitPrice": unit_price,
                "totalUnitPrice": amount,
                "returnedCount": 0,
                "totalDiscount": 0,
                "totalVat": 0,
                "totalToll": 0,
            }],
            "totalValue": amount,
            "discount": 0,
            "vat": 0,
            "toll": 0,
            "finalValue": amount,
        }

        def run(deadline: float) -> str:
            existing = self._invoice_with_ref(op, type_code, idempotency_key, deadline)
            if existing:
                return existing
            body = self._rest(op, "POST", INVOICE_CREATE_PATH, deadline, payload, "invoice/sales/create",
                              headers=headers)
            return _text_field(op, body, "crmId")

        invoice_id = self._call(op, run)
        self._remember(memo, invoice_id)
        return invoice_id

    def send_payment_link(self, link: dict[str, object], idempotency_key: str) -> None:
        """IEpay.CreatePaymentLink: Payamgostar makes the link and texts it to the mobile.

        A link without a customer (a caller who is no customer) goes to the identity with
        that mobile, created first if there is none: PaymentLinkInfo needs an IdentityId.
        """
        op = "send_payment_link"
        _idempotency(op, idempotency_key)
        memo = f"link:{idempotency_key}"
        if memo in self._done:
            return
        customer_id = link.get("customer_id")
        identity_id = _guid(op, customer_id) if customer_id else ""
        amount = _amount(op, link.get("amount"))
        mobile = link.get("mobile")
        number = phones.normalize(mobile, self.region) if isinstance(mobile, str) else None
        if not number:
            raise CRMError("no mobile number to send the payment link to", operation=op)
        account = str(link.get("account") or "").strip()

        def run(deadline: float) -> None:
            members: list[tuple[str, str]] = [
                ("Amount", str(amount)),
                ("Description", _link_description(idempotency_key, link)),
                ("ExpireAfterDays", str(self.payment_link_expire_days)),
                ("IdentityId", identity_id or self._identity_for(op, number, deadline)),
                ("MobilePhoneNumber", self._crm_phone(number)),
            ]
            if account:
                members.append(("MoneyAccountUserKey", account))
            members.append(("RegisterReceipt", "false"))
            result = self._soap(op, "IEpay", "CreatePaymentLink", [
                ("username", self.username), ("password", self._password), ("paymentLink", members),
            ], deadline)
            if result is None or not _success(result):
                raise CRMError("the CRM did not create the payment link", operation=op, status=200)

        self._call(op, run)
        self._remember(memo, "")

    def ping(self) -> bool:
        """IUser.CheckUserAuthentication: True when the CRM answers and accepts fsapp's user."""
        op = "ping"

        def run(deadline: float) -> bool:
            result = self._soap(op, "IUser", "CheckUserAuthentication", [
                ("userName", self.username), ("password", self._password),
            ], deadline)
            return result is not None and (result.text or "").strip().lower() == "true"

        try:
            return self._call(op, run)
        except CRMError:
            return False

    def push_call(self, record: Mapping[str, object], idempotency_key: str) -> None:
        """Write one finished call to Payamgostar's call log (REST /api/v1/telephony).

        `record` is a journal row (spec section 5): uuid, direction, caller, called,
        extension, status, started_at, answered_at, ended_at, recording, hangup_cause,
        customer_id. The call is created with its first channel (the trunk, or the
        extension for an outbound call), an extension's channel is added when a person
        was rung, that channel is closed with its response (answered, busy, not answered,
        transferred) and recording file name, and the call is closed. A retry after a
        partial failure resumes where the last attempt stopped.
        """
        op = "push_call"
        _idempotency(op, idempotency_key)
        memo = f"call:{idempotency_key}"
        if memo in self._done:
            return
        if not self.telephony_key:
            raise CRMError("crm.telephony_key is not set: the call log needs the telephony system's key",
                           operation=op)
        call = _call_record(op, record)
        outbound = call["direction"] == "outbound"
        extension = call["extension"]
        external = self._crm_phone(call["called"] if outbound else call["caller"])
        status = call["status"]
        if outbound:
            call_type = CALL_OUTGOING
        else:
            call_type = CALL_RECEIVED if status in ANSWERED_STATUSES else CALL_MISSED
        if status in ("answered", "completed"):
            response = RESPONSE_ANSWERED
        elif status == "transferred":
            response = RESPONSE_TRANSFERRED
        elif call["hangup_cause"] == "USER_BUSY":
            response = RESPONSE_BUSY
        else:
            response = RESPONSE_NOT_ANSWERED
        init_is_extension = outbound and bool(extension)
        create = {
            "tsKey": self.telephony_key,
            "sourceId": call["uuid"],
            "phoneNumber": external,
            "startDate": call["started_at"],
            "callTypeIndex": call_type,
            "initChannelPeerName": extension if init_is_extension else self.trunk_name,
            "initChannelPeerTypeIndex": PEER_EXTENSION if init_is_extension else PEER_TRUNK,
            "initChannelSourceId": call["uuid"],
            "isLive": False,
        }
        progress = self._call_progress.get(memo, {})

        def run(deadline: float) -> None:
            if "call_id" not in progress:
                body = self._rest(op, "POST", CALL_PATH, deadline, create, "telephony/call create")
                progress["call_id"] = _int_field(op, body, "callId")
                progress["init_channel_id"] = _int_field(op, body, "initChannelId")
                self._keep_progress(memo, progress)
            if "channel_id" not in progress:
                if extension and not init_is_extension:
                    body = self._rest(op, "POST", CHANNEL_PATH, deadline, {
                        "callId": progress["call_id"],
                        "channelPeerName": extension,
                        "channelPeerTypeIndex": PEER_EXTENSION,
                        "channelSourceId": f"{call['uuid']}-{extension}",
                        "channelStatusIndex": CHANNEL_HANGUP,
                        "createDate": call["answered_at"] or call["started_at"],
                        "isLive": False,
                    }, "telephony/channel create")
                    progress["channel_id"] = _int_field(op, body, "callChannelId")
                else:
                    progress["channel_id"] = progress["init_channel_id"]
            if "channel_closed" not in progress:
                update: dict[str, Any] = {
                    "callChannelId": progress["channel_id"],
                    "channelStatusIndex": CHANNEL_HANGUP,
                    "channelResponseIndex": response,
                    "hangupDate": call["ended_at"],
                    "isLive": False,
                }
                if call["answered_at"]:
                    update["connectDate"] = call["answered_at"]
                if call["recording"]:
                    update["recordedFileName"] = call["recording"]
                self._rest(op, "PUT", CHANNEL_PATH, deadline, update, "telephony/channel update", empty_ok=True)
                progress["channel_closed"] = 1
            close: dict[str, Any] = {
                "callId": progress["call_id"],
                "endDate": call["ended_at"],
                "phoneNumber": external,
                "callTypeIndex": call_type,
                "isLive": False,
            }
            if _GUID.fullmatch(call["customer_id"]):
                close["identityId"] = call["customer_id"]
            self._rest(op, "PUT", CALL_PATH, deadline, close, "telephony/call update", empty_ok=True)

        self._call(op, run)
        self._call_progress.pop(memo, None)
        self._remember(memo, "")

    # -- identities and users -------------------------------------------------------

    def _identity_by_phone(self, op: str, e164: str, deadline: float) -> _Identity | None:
        result = self._soap(op, "IIdentity", "FindIdentityByPhoneNumber", [
            ("username", self.username), ("password", self._password), ("phoneNumber", self._crm_phone(e164)),
        ], deadline)
        if result is None:
            return None
        found = _child(result, "IdentityInfo")
        if found is None:
            if not _success(result):
                log.info("crm_lookup_unsuccessful", operation=op)
            return None
        return _identity(op, found)

    def _identity_by_id(self, op: str, identity_id: str, deadline: float) -> _Identity | None:
        result = self._soap(op, "IIdentity", "FindIdentityById", [
            ("username", self.username), ("password", self._password), ("identityId", identity_id),
        ], deadline)
        found = None if result is None else _child(result, "IdentityInfo")
        return None if found is None else _identity(op, found)

    def _customer(self, op: str, identity: _Identity, deadline: float) -> Customer:
        numbers: list[str] = []
        for raw, _default in sorted(identity.phones, key=lambda p: not p[1]):
            e164 = phones.normalize(raw, self.region)
            if e164 and e164 not in numbers:
                numbers.append(e164)
        mobile = next((n for n in numbers if phones.is_mobile(n, self.region)), "")
        name = identity.fields.get("NickName", "") or " ".join(
            part for part in (identity.fields.get("FirstName", ""), identity.fields.get("LastName", "")) if part
        )
        responsible: dict[str, str] = {}
        for role, field in RESPONSIBLE_FIELDS:
            user = identity.fields.get(field, "").strip()
            if user:
                extension = self._extension(op, user, deadline)
                if extension:
                    responsible[role] = extension
        return Customer(
            id=identity.crm_id,
            number=identity.value(self.customer_number_field),
            name=name,
            type=identity.value(self.type_field) if self.type_field else "",
            mobile=mobile,
            phones=tuple(numbers),
            responsible=responsible,
        )

    def _extension(self, op: str, username: str, deadline: float) -> str:
        """The user's extension (its internal number) in `telephony_key`'s system, cached.

        A failed lookup leaves that role without an extension rather than failing the
        whole lookup; it is not cached, so the next call asks again.
        """
        now = time.monotonic()
        cached = self._extensions.get(username)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            result = self._soap(op, "IUser", "GetUserExtensions", [
                ("username", self.username), ("password", self._password), ("targetUsername", username),
            ], deadline)
        except CRMError as exc:
            log.warning("crm_extension_unavailable", operation=op, reason=exc.reason, status=exc.status)
            return ""
        extension = ""
        if result is not None and _success(result):
            for system in _items(result, "TelephonySystems"):
                if self.telephony_key and _text(system, "Key") != self.telephony_key:
                    continue
                names = [_text(ext, "Name") for ext in _items(system, "Extensions")]
                extension = next((name for name in names if name), "")
                if extension:
                    break
        if len(self._extensions) >= _EXTENSION_CACHE_SIZE:
            self._extensions.clear()
        self._extensions[username] = (extension, now + self.extension_cache_seconds)
        return extension

    def _invoice_with_ref(self, op: str, type_code: str, ref: str, deadline: float) -> str:
        """The crmId of an invoice already made with this refId, or "" (also if the query is refused)."""
        query = {
            "typeKey": type_code,
            "queries": [{"logicalOperator": 0, "field": "RefId", "operator": 0, "value": ref}],
            "pageNumber": 1,
            "pageSize": 5,
        }
        try:
            body = self._rest(op, "POST", INVOICE_FIND_PATH, deadline, query, "invoice/sales/find")
        except CRMError as exc:
            if exc.status in _REFUSED_QUERY_STATUSES:
                log.warning("crm_invoice_lookup_refused", operation=op, status=exc.status)
                return ""
            raise
        data = _get(body, "data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise CRMError("malformed response: invoice find without a 'data' list", operation=op)
        for item in data:
            # Only an invoice that shows this refId counts, in case a CRM ignores the filter.
            if isinstance(item, dict) and _get(item, "refId") == ref:
                crm_id = _get(item, "crmId")
                if isinstance(crm_id, str) and crm_id:
                    return crm_id
        return ""

    # -- transport ------------------------------------------------------------------

    def _crm_phone(self, e164: str) -> str:
        """A number as Payamgostar stores it: national digits (09121234567) or E.164."""
        if self.phone_format == "e164" or not e164.startswith("+"):
            return e164
        try:
            parsed = phonenumbers.parse(e164, None)
        except phonenumbers.NumberParseException:
            return e164
        if parsed.country_code == phonenumbers.country_code_for_region(self.region):
            written = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        else:
            written = phonenumbers.format_out_of_country_calling_number(parsed, self.region)
        return "".join(ch for ch in written if ch.isdigit())

    def _bearer(self, op: str, deadline: float) -> str:
        """The cached token, or a fresh one from a login (one login at a time)."""
        if not self._token_lock.acquire(timeout=max(deadline - time.monotonic(), 0.001)):
            raise CRMError("no answer while another request was logging in", operation=op)
        try:
            if self._token and (self._token_expires is None or time.monotonic() < self._token_expires):
                return self._token
            self._token = ""
            self._login(op, deadline)
            return self._token
        finally:
            self._token_lock.release()

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token = ""

    def _login(self, op: str, deadline: float) -> None:
        data = _encode(op, {
            "username": self.username, "password": self._password,
            "deviceId": self.device_id, "platformType": self.platform_type,
        })
        try:
            body = self._send(op, "POST", LOGIN_PATH, deadline, data, {}, "auth/login")
        except CRMError as exc:
            reasons = {
                400: "login refused: bad request",
                401: "login refused: wrong username or password",
                402: "login refused: the CRM's mobile app (API) module is not available",
                403: "login refused: user locked out",
            }
            if exc.status in reasons:
                raise CRMError(f"{reasons[exc.status]} (HTTP {exc.status})", operation=op, status=exc.status) from None
            raise
        answer = _json(op, body, "auth/login")
        token = _get(answer, "accessToken") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise CRMError("malformed response: login without an accessToken", operation=op)
        if not (token.isascii() and token.isprintable()):
            raise CRMError("malformed response: the accessToken cannot be sent in a header", operation=op)
        self._token = token.strip()
        self._token_expires = _token_expiry(answer)
        log.info("crm_login", operation=op,
                 valid_seconds=None if self._token_expires is None else round(self._token_expires - time.monotonic()))

    def _rest(
        self,
        op: str,
        method: str,
        path: str,
        deadline: float,
        payload: object,
        label: str,
        *,
        headers: Mapping[str, str] | None = None,
        empty_ok: bool = False,
    ) -> Any:
        """One REST exchange with the bearer token; a 401 logs in again and retries once."""
        data = _encode(op, payload)
        token = self._bearer(op, deadline)
        try:
            body = self._send(op, method, path, deadline, data, {**(headers or {}), "Authorization": f"Bearer {token}"},
                              label)
        except CRMError as exc:
            if exc.status != 401:
                raise
            log.info("crm_token_rejected", operation=op, call=label)
            self._forget(token)
            token = self._bearer(op, deadline)
            body = self._send(op, method, path, deadline, data, {**(headers or {}), "Authorization": f"Bearer {token}"},
                              label)
        if not body.strip():
            if empty_ok:
                return None
            raise CRMError(f"malformed response: {label} answered with an empty body", operation=op)
        return _json(op, body, label)

    def _soap(
        self,
        op: str,
        service: str,
        action: str,
        params: list[tuple[str, str | list[tuple[str, str]]]],
        deadline: float,
    ) -> ET.Element | None:
        """One SOAP 1.1 call; the `<action>Result` element, or None when it is nil or absent."""
        label = f"{service}.{action}"
        envelope = ET.Element(f"{{{SOAP_ENV_NS}}}Envelope")
        body = ET.SubElement(envelope, f"{{{SOAP_ENV_NS}}}Body")
        request = ET.SubElement(body, f"{{{SOAP_CALL_NS}}}{action}")
        for name, value in params:
            element = ET.SubElement(request, f"{{{SOAP_CALL_NS}}}{name}")
            if isinstance(value, list):
                for member, text in value:
                    ET.SubElement(element, f"{{{DATA_NS}}}{member}").text = text
            else:
                element.text = value
        data = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
        headers = {"SOAPAction": f'"{SOAP_CALL_NS}{service}/{action}"'}
        answer = self._send(op, "POST", SOAP_PATH.format(service=service), deadline, data, headers, label)
        head = answer[:4096].upper()
        if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
            raise CRMError(f"malformed response: {label} answered with a document type declaration", operation=op)
        try:
            root = ET.fromstring(answer)
        except ET.ParseError:
            raise CRMError(f"malformed XML in the {label} response", operation=op) from None
        soap_body = _child(root, "Body")
        response = None if soap_body is None else _child(soap_body, f"{action}Response")
        if response is None:
            raise CRMError(f"malformed response: {label} answered without {action}Response", operation=op)
        return _child(response, f"{action}Result")

    def _send(
        self,
        op: str,
        method: str,
        path: str,
        deadline: float,
        data: bytes,
        headers: Mapping[str, str],
        label: str,
    ) -> bytes:
        """One exchange through HttpCRM's machinery; the raw 2xx body (JSON, XML or empty).

        Like HttpCRM._request, but the body is returned unparsed because this kind also
        speaks SOAP and some of its REST calls answer with no body at all.
        """
        status, body = self._send_raw(op, method, path, deadline, data=data, headers=headers, label=label)
        if 300 <= status < 400:
            raise CRMError(f"{label}: unexpected redirect (HTTP {status})", operation=op, status=status)
        if not 200 <= status < 300:
            raise CRMError(f"{label}: HTTP {status}", operation=op, status=status)
        return body

    def _remember(self, memo: str, value: str) -> None:
        """Writes the CRM accepted, by key, so a repeat in this process sends nothing."""
        self._done[memo] = value
        self._done.move_to_end(memo)
        while len(self._done) > _MEMO_SIZE:
            self._done.popitem(last=False)

    def _keep_progress(self, memo: str, progress: dict[str, int]) -> None:
        self._call_progress[memo] = progress
        while len(self._call_progress) > _MEMO_SIZE:
            self._call_progress.popitem(last=False)


# -- helpers ----------------------------------------------------------------------------


def _string(values: Mapping[str, object], key: str) -> str:
    value = values.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"crm.{key}: must be a string")
    return value


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(element: ET.Element, name: str) -> ET.Element | None:
    """The child with this local name, or None (also when it is xsi:nil)."""
    for child in element:
        if _local(child.tag) == name:
            return None if child.get(f"{{{XSI_NS}}}nil") == "true" else child
    return None


def _text(element: ET.Element, name: str) -> str:
    child = _child(element, name)
    return "" if child is None else (child.text or "").strip()


def _items(element: ET.Element, name: str) -> list[ET.Element]:
    """The entries of a list member (`<ExtendedProperties><a:Base…Info>…`)."""
    child = _child(element, name)
    return [] if child is None else list(child)


def _success(result: ET.Element) -> bool:
    """An OperationResult's Success; results without one count as successful."""
    flag = _child(result, "Success")
    return flag is None or (flag.text or "").strip().lower() == "true"


def _identity(op: str, element: ET.Element) -> _Identity:
    crm_id = _text(element, "CrmId")
    if not _GUID.fullmatch(crm_id):
        raise CRMError("malformed response: identity without a CrmId", operation=op)
    fields: dict[str, str] = {}
    for child in element:
        if len(child) == 0 and child.get(f"{{{XSI_NS}}}nil") != "true":
            fields[_local(child.tag)] = (child.text or "").strip()
    extended: dict[str, str] = {}
    for prop in _items(element, "ExtendedProperties"):
        key = _text(prop, "UserKey")
        if key:
            extended[key] = _text(prop, "Value")
    numbers: list[tuple[str, bool]] = []
    for contact in _items(element, "PhoneContacts"):
        if _text(contact, "IsDeleted").lower() == "true":
            continue
        number = _text(contact, "PhoneNumber")
        if number:
            numbers.append((number, _text(contact, "IsDefault").lower() == "true"))
    return _Identity(crm_id.lower(), fields, extended, numbers)


def _get(obj: Mapping[str, Any], key: str) -> Any:
    """`obj[key]`, matching the key's case loosely (Payamgostar answers camelCase or PascalCase)."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for name, value in obj.items():
        if isinstance(name, str) and name.lower() == lowered:
            return value
    return None


def _json(op: str, body: bytes, label: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise CRMError(f"malformed JSON in the {label} response", operation=op) from None


def _text_field(op: str, body: object, key: str) -> str:
    value = _get(body, key) if isinstance(body, dict) else None
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise CRMError(f"malformed response: expected a non-empty {key!r}", operation=op)


def _int_field(op: str, body: object, key: str) -> int:
    value = _get(body, key) if isinstance(body, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise CRMError(f"malformed response: expected an integer {key!r}", operation=op)


def _guid(op: str, value: object) -> str:
    if isinstance(value, str) and _GUID.fullmatch(value.strip()):
        return value.strip().lower()
    raise CRMError("customer id is not a Payamgostar identity id", operation=op)


def _link_description(key: str, link: Mapping[str, object]) -> str:
    """`fsapp <key>`, then the module's invoice type and search field: PaymentLinkInfo has no members for them."""
    return _described(f"fsapp {key}", link, ("invoice_type", "invoice_search_field"))


def _invoice_description(call_uuid: str, talk: object, invoice: Mapping[str, object]) -> str:
    """The call and its talk, then the module's search field: the published invoice model has no member for it."""
    return _described(f"call {call_uuid}, talk {talk} s" if call_uuid else "fsapp", invoice, ("invoice_search_field",))


def _described(head: str, values: Mapping[str, object], names: tuple[str, ...]) -> str:
    parts = [head]
    for name in names:
        value = str(values.get(name) or "").strip()
        if value:
            parts.append(f"{name}={value}")
    return "; ".join(parts)


def _price(op: str, product: ET.Element, code: str, type_code: str) -> int:
    """A product's price for an invoice type: its line in that type's price list, else its UnitPrice."""
    text = ""
    if type_code:
        for price_list in _items(product, "PriceListInfo"):
            if _text(price_list, "InvoiceType") != type_code:
                continue
            line = next((li for li in _items(price_list, "PriceListProducts") if _text(li, "ProductCode") == code),
                        None)
            if line is not None:
                text = _text(line, "Amount")
                break
    text = text or _text(product, "UnitPrice")
    rial = _rial(op, text, "the product's price is") if text else 0
    if rial <= 0:
        raise CRMError("the product has no price", operation=op)
    return rial


def _rial(op: str, text: str, what: str) -> int:
    """A decimal amount Payamgostar sends, as whole rial (half to even)."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise CRMError(f"malformed response: {what} not a number", operation=op) from None
    if not amount.is_finite():
        raise CRMError(f"malformed response: {what} not a number", operation=op)
    return int(amount.to_integral_value(rounding=ROUND_HALF_EVEN))


def _amount(op: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise CRMError("amount must be a positive integer (rial)", operation=op)


def _token_expiry(answer: Mapping[str, Any]) -> float | None:
    """When to stop using a new token (monotonic), or None to use it until a 401.

    Reads `expiresAt` (an ISO time) or `expires_in`/`expiresIn` (seconds) and stops a
    little early. A time already past, as a skewed clock would show it, is not trusted.
    """
    lifetime: float | None = None
    expires_at = _get(answer, "expiresAt")
    if isinstance(expires_at, str) and expires_at.strip():
        try:
            when = datetime.fromisoformat(expires_at.strip())
        except ValueError:
            when = None
        if when is not None:
            lifetime = (when.astimezone(UTC) - datetime.now(UTC)).total_seconds()
    if lifetime is None:
        seconds = _get(answer, "expiresIn")
        if seconds is None:
            seconds = _get(answer, "expires_in")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            lifetime = float(seconds)
    if lifetime is None or lifetime <= 0:
        return None
    return time.monotonic() + lifetime - min(_TOKEN_MARGIN_SECONDS, lifetime / 10)


def _call_record(op: str, record: Mapping[str, object]) -> dict[str, str]:
    """The journal row's fields push_call uses, checked; times as ISO 8601 strings."""
    if not isinstance(record, Mapping):
        raise CRMError("call record must be an object", operation=op)

    def text(key: str, required: bool = False) -> str:
        value = record.get(key)
        if value is None:
            value = ""
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise CRMError(f"call record: {key} must be a string", operation=op)
        value = str(value).strip()
        if required and not value:
            raise CRMError(f"call record: {key} is missing", operation=op)
        return value

    def when(key: str, required: bool = False) -> str:
        value = text(key, required)
        if not value:
            return ""
        try:  # with its offset; a naive time (queued before the journal kept UTC) is the host's
            return instants.parse(value).isoformat()  # type: ignore[union-attr]
        except ValueError:
            raise CRMError(f"call record: {key} is not an ISO 8601 time", operation=op) from None

    direction = text("direction", True)
    if direction not in ("inbound", "outbound"):
        raise CRMError("call record: direction must be inbound or outbound", operation=op)
    started = when("started_at", True)
    return {
        "uuid": text("uuid", True),
        "direction": direction,
        "caller": text("caller"),
        "called": text("called"),
        "extension": text("extension"),
        "status": text("status"),
        "hangup_cause": text("hangup_cause").upper(),
        "recording": text("recording"),
        "customer_id": text("customer_id"),
        "started_at": started,
        "answered_at": when("answered_at"),
        "ended_at": when("ended_at") or started,
    }
