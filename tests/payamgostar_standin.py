"""A local stand-in for exactly the Payamgostar web services the `payamgostar` CRM uses.

Request and response shapes follow what Payamgostar publishes (docs/payamgostar.md
names the sources): REST v2 login and crmobject calls answer camelCase JSON, the v1
telephony calls answer PascalCase JSON, and the SOAP services (IIdentity, IUser, IEpay, IProduct)
answer WCF-style envelopes with DataContract members. Requests that do not have the
documented shape are refused with 400 (REST) or 415/500 (SOAP), so the tests check the
adapter's requests as well as its reading of the answers.

Knobs: `token_lifetime` (seconds a new token lives), `fail_next(n)` (the next n requests
answer 500), `delay` (seconds before each answer), `login_delay` (before a login's), `down()`/`up()` (stop listening, so
connections are refused, and start again on the same port), `revoke_tokens()` (every
issued token now answers 401), `refuse_invoice_find` (invoice find answers 400) and
`payment_link_success`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_CALL_NS = "http://tempuri.org/"
DATA_NS = "http://schemas.datacontract.org/2004/07/Septa.PayamGostar.ServiceLayer.Contract.PGContracts.DataContracts"
TEHRAN = timezone(timedelta(hours=3, minutes=30))

SOAP_OPERATIONS = {
    "IIdentity": ("FindIdentityByPhoneNumber", "SearchIdentity", "FindIdentityById"),
    "IUser": ("GetUserExtensions", "CheckUserAuthentication"),
    "IEpay": ("CreatePaymentLink",),
    "IProduct": ("FindProductByCode",),
}
# Operations whose user parameter is `userName` (the others have `username`).
USER_NAME_OPERATIONS = ("SearchIdentity", "CheckUserAuthentication", "FindProductByCode")
PAYMENT_LINK_MEMBERS = ("Amount", "Description", "EmailAddress", "ExpireAfterDays", "IdentityId",
                        "MobilePhoneNumber", "MoneyAccountUserKey", "PaymentTypeUserKey", "RegisterReceipt")
_QUERY = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*==\s*"([^"]*)"\s*')


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def national_digits(number: str) -> str:
    """A phone number reduced to Iranian national digits for matching (as the CRM would)."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if digits.startswith("0098"):
        return "0" + digits[4:]
    if digits.startswith("98") and len(digits) == 12:
        return "0" + digits[2:]
    return digits


class PayamgostarStandIn:
    """A threaded local HTTP server answering like a Payamgostar installation."""

    def __init__(self, *, username: str = "fsapp-ws", password: str = "pg-S3cret!pass",
                 token_lifetime: float = 3600.0) -> None:
        self.username = username
        self.password = password
        self.token_lifetime = token_lifetime
        self.delay = 0.0
        self.login_delay = 0.0  # seconds before a login is answered
        self.refuse_invoice_find = False
        self.payment_link_success = True
        self.identities: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, list[str]]] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, float] = {}
        self.logins = 0
        self.rejected = 0
        self.seen: list[str] = []
        self.persons: list[dict[str, Any]] = []
        self.invoices: list[dict[str, Any]] = []
        self.payment_links: list[dict[str, str]] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self._failures = 0
        self._next_id = 1000
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> PayamgostarStandIn:
        self._stopping.clear()
        self._server = make_server("127.0.0.1", self.port, self, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def down(self) -> None:
        """Stop listening: connections to the port are refused until `up()`."""
        self.stop()

    def up(self) -> None:
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- knobs and data -------------------------------------------------------------

    def fail_next(self, count: int) -> None:
        """The next `count` requests answer 500 (a SOAP fault for SOAP calls)."""
        with self._lock:
            self._failures = count

    def revoke_tokens(self) -> None:
        """Every token issued so far is now rejected with 401."""
        with self._lock:
            self.tokens.clear()

    def add_identity(
        self,
        nick_name: str,
        *,
        phones: Iterable[str] = (),
        customer_number: str = "",
        classification: str = "",
        balance: str = "",
        sale: str = "",
        support: str = "",
        other: str = "",
        extended: Mapping[str, str] | None = None,
        kind: str = "PersonInfo",
    ) -> str:
        """Store an identity (person or organization); returns its CrmId."""
        crm_id = str(uuid.uuid4())
        self.identities[crm_id] = {
            "kind": kind,
            "CrmId": crm_id,
            "NickName": nick_name,
            "CustomerNumber": customer_number,
            "Classification": classification,
            "Balance": balance,
            "SaleUsername": sale,
            "SupportUsername": support,
            "OtherUsername": other,
            "phones": list(phones),
            "extended": dict(extended or {}),
        }
        return crm_id

    def add_product(self, code: str, unit_price: str = "", price_lists: Mapping[str, str] | None = None,
                    *, name: str = "") -> None:
        """A product with its UnitPrice and, by invoice type, its amount in that type's price list."""
        self.products[code] = {"Code": code, "Name": name or code, "Id": str(uuid.uuid4()), "UnitPrice": unit_price,
                               "price_lists": dict(price_lists or {})}

    def add_user(self, username: str, extensions: Mapping[str, list[str]]) -> None:
        """A CRM user with its extensions, by telephony system key."""
        self.users[username] = {key: list(names) for key, names in extensions.items()}

    # -- WSGI -----------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if self.delay:
            self._stopping.wait(self.delay)
        with self._lock:
            failing = self._failures > 0
            if failing:
                self._failures -= 1
        soap = request.path.startswith("/services/api/")
        if failing:
            self.seen.append(f"{request.method} {request.path} -> 500")
            if soap:
                return _soap_fault("injected failure")
            return Response("injected failure", status=500)
        if soap:
            return self._soap(request)
        self.seen.append(f"{request.method} {request.path}")
        return self._rest(request)

    # -- REST -----------------------------------------------------------------------

    def _rest(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            return _json({"message": "body is not JSON"}, 400)
        if request.mimetype != "application/json":
            return _json({"message": "expected application/json"}, 415)
        if (request.method, request.path) == ("POST", "/api/v2/auth/login"):
            return self._login(body)
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        with self._lock:
            expires = self.tokens.get(token)
            valid = expires is not None and expires > time.time()
            if not valid:
                self.rejected += 1
        if not valid:
            return _json({"message": "Authorization has been denied for this request."}, 401)
        routes = {
            ("POST", "/api/v2/crmobject/person/create"): self._person_create,
            ("POST", "/api/v2/crmobject/invoice/sales/find"): self._invoice_find,
            ("POST", "/api/v2/crmobject/invoice/sales/create"): self._invoice_create,
            ("POST", "/api/v1/telephony/call"): self._call_create,
            ("PUT", "/api/v1/telephony/call"): self._call_update,
            ("POST", "/api/v1/telephony/channel"): self._channel_create,
            ("PUT", "/api/v1/telephony/channel"): self._channel_update,
        }
        route = routes.get((request.method, request.path))
        if route is None:
            return _json({"message": "No HTTP resource was found"}, 404)
        if not isinstance(body, dict):
            return _json({"message": "body must be an object"}, 400)
        return route(body)

    def _login(self, body: Any) -> Response:
        if self.login_delay:
            self._stopping.wait(self.login_delay)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) and body[key] for key in ("username", "password", "deviceId")
        ) or not isinstance(body.get("platformType"), int):
            return _json({"message": "username, password, deviceId and platformType are required"}, 400)
        if (body["username"], body["password"]) != (self.username, self.password):
            return _json({"message": "Invalid username or password"}, 401)
        token = secrets.token_urlsafe(24)
        expires = time.time() + self.token_lifetime
        with self._lock:
            self.tokens[token] = expires
            self.logins += 1
        when = datetime.fromtimestamp(expires, TEHRAN).strftime("%Y-%m-%dT%H:%M:%S.%f") + "3+03:30"
        return _json({"expiresAt": when, "accessToken": token, "refreshToken": secrets.token_urlsafe(16)})

    def _person_create(self, body: dict[str, Any]) -> Response:
        contacts = body.get("phoneContacts")
        if not isinstance(body.get("nickName"), str) or not isinstance(contacts, list) or not all(
            isinstance(c, dict) and isinstance(c.get("phoneNumber"), str) for c in contacts
        ):
            return _json({"message": "nickName and phoneContacts[].phoneNumber are required"}, 400)
        self.persons.append(body)
        crm_id = self.add_identity(body["nickName"], phones=[c["phoneNumber"] for c in contacts])
        return _json({"crmId": crm_id})

    def _invoice_find(self, body: dict[str, Any]) -> Response:
        if self.refuse_invoice_find:
            return _json({"message": "The field RefId is not searchable"}, 400)
        queries = body.get("queries")
        if not isinstance(body.get("typeKey"), str) or not isinstance(queries, list):
            return _json({"message": "typeKey and queries are required"}, 400)
        found = list(self.invoices)
        for query in queries:
            if not isinstance(query, dict) or query.get("operator") != 0 or not isinstance(query.get("field"), str):
                return _json({"message": "unsupported query"}, 400)
            key = query["field"][:1].lower() + query["field"][1:]
            found = [inv for inv in found if str(inv.get(key)) == str(query.get("value"))]
        data = [{"crmId": inv["crmId"], "refId": inv["refId"], "crmObjectTypeCode": inv["crmObjectTypeCode"],
                 "finalValue": inv["finalValue"]} for inv in found]
        return _json({"data": data, "total": len(data)})

    def _invoice_create(self, body: dict[str, Any]) -> Response:
        details = body.get("details")
        if not isinstance(body.get("crmObjectTypeCode"), str) or body.get("identityId") not in self.identities:
            return _json({"message": "crmObjectTypeCode and a known identityId are required"}, 400)
        if not isinstance(details, list) or not details or not all(
            isinstance(d, dict) and isinstance(d.get("count"), (int, float)) and "baseUnitPrice" in d for d in details
        ):
            return _json({"message": "details are required"}, 400)
        crm_id = str(uuid.uuid4())
        self.invoices.append({**body, "crmId": crm_id})
        return _json({"crmId": crm_id})

    def _call_create(self, body: dict[str, Any]) -> Response:
        required = ("tsKey", "sourceId", "phoneNumber", "startDate", "initChannelPeerName", "initChannelSourceId")
        if not all(isinstance(body.get(key), str) and body[key] for key in required):
            return _json({"message": "missing call fields"}, 400)
        if body.get("callTypeIndex") not in (1, 2, 3, 4) or body.get("initChannelPeerTypeIndex") not in (1, 2):
            return _json({"message": "bad callTypeIndex or initChannelPeerTypeIndex"}, 400)
        if not _is_time(body["startDate"]):
            return _json({"message": "bad startDate"}, 400)
        call_id, channel_id = self._id(), self._id()
        self.calls[call_id] = {**body, "channels": [channel_id]}
        self.channels[channel_id] = {"callId": call_id, "channelPeerName": body["initChannelPeerName"],
                                     "channelPeerTypeIndex": body["initChannelPeerTypeIndex"]}
        return _json({"CallId": call_id, "InitChannelId": channel_id, "IdentityId": None, "IdentityNickName": None})

    def _call_update(self, body: dict[str, Any]) -> Response:
        call = self.calls.get(body.get("callId"))  # type: ignore[arg-type]
        if call is None or body.get("callTypeIndex") not in (1, 2, 3, 4) or not _is_time(body.get("endDate")):
            return _json({"message": "unknown callId or bad fields"}, 400)
        call.update(body)
        call["closed"] = True
        identity = self.identities.get(str(body.get("identityId")))
        return _json({"IdentityId": identity["CrmId"] if identity else None,
                      "IdentityNickName": identity["NickName"] if identity else None})

    def _channel_create(self, body: dict[str, Any]) -> Response:
        call = self.calls.get(body.get("callId"))  # type: ignore[arg-type]
        if call is None or body.get("channelPeerTypeIndex") not in (1, 2) or body.get("channelStatusIndex") not in (
            1, 2, 3, 4
        ) or not isinstance(body.get("channelPeerName"), str) or not _is_time(body.get("createDate")):
            return _json({"message": "unknown callId or bad fields"}, 400)
        channel_id = self._id()
        call["channels"].append(channel_id)
        self.channels[channel_id] = dict(body)
        return _json({"CallChannelId": channel_id})

    def _channel_update(self, body: dict[str, Any]) -> Response:
        channel = self.channels.get(body.get("callChannelId"))  # type: ignore[arg-type]
        if channel is None or body.get("channelResponseIndex") not in (1, 2, 3, 4) or body.get(
            "channelStatusIndex"
        ) not in (1, 2, 3, 4) or not _is_time(body.get("hangupDate")):
            return _json({"message": "unknown callChannelId or bad fields"}, 400)
        if "connectDate" in body and not _is_time(body["connectDate"]):
            return _json({"message": "bad connectDate"}, 400)
        channel.update(body)
        return Response(b"", status=200)

    def _id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    # -- SOAP -----------------------------------------------------------------------

    def _soap(self, request: Request) -> Response:
        match = re.fullmatch(r"/services/api/(I[A-Za-z]+)\.svc", request.path)
        service = match.group(1) if match else ""
        if service not in SOAP_OPERATIONS:
            self.seen.append(f"POST {request.path}")
            return Response("not found", status=404)
        if request.mimetype != "text/xml":
            self.seen.append(f"{service} wrong content type")
            return Response("Cannot process the message because the content type was not text/xml", status=415)
        try:
            envelope = ET.fromstring(request.get_data())
        except ET.ParseError:
            return _soap_fault("The message is not well-formed XML")
        body = envelope.find(f"{{{SOAP_ENV_NS}}}Body")
        call = None if body is None or len(body) == 0 else body[0]
        if call is None or not call.tag.startswith(f"{{{SOAP_CALL_NS}}}"):
            return _soap_fault("No operation element in the tempuri.org namespace")
        action = call.tag.split("}", 1)[1]
        self.seen.append(f"{service}.{action}")
        if action not in SOAP_OPERATIONS[service]:
            return _soap_fault(f"Unknown operation {action}")
        if request.headers.get("SOAPAction", "") != f'"{SOAP_CALL_NS}{service}/{action}"':
            return _soap_fault("The SOAP action does not match the operation")
        params = {child.tag.split("}", 1)[1]: child for child in call if child.tag.startswith(f"{{{SOAP_CALL_NS}}}")}
        user = _param(params, "userName" if action in USER_NAME_OPERATIONS else "username")
        authenticated = (user, _param(params, "password")) == (self.username, self.password)
        if action == "CheckUserAuthentication":
            return _soap_answer(action, "true" if authenticated else "false", typed=False)
        if not authenticated:
            return _soap_answer(action, _result(False, "Invalid username or password"))
        return getattr(self, f"_soap_{action}")(action, params)

    def _soap_FindIdentityByPhoneNumber(self, action: str, params: dict[str, ET.Element]) -> Response:  # noqa: N802
        wanted = national_digits(_param(params, "phoneNumber"))
        for identity in self.identities.values():
            if wanted and any(national_digits(p) == wanted for p in identity["phones"]):
                return _soap_answer(action, _result(True, None, _identity_xml("IdentityInfo", identity))
                                    + '<a:IdentityInfoList i:nil="true"/>')
        return _soap_answer(action, _result(False, "Identity not found")
                            + '<a:IdentityInfo i:nil="true"/><a:IdentityInfoList i:nil="true"/>')

    def _soap_SearchIdentity(self, action: str, params: dict[str, ET.Element]) -> Response:  # noqa: N802
        match = _QUERY.fullmatch(_param(params, "query"))
        if match is None:
            return _soap_answer(action, _result(False, "Invalid query") + '<a:IdentityInfoList i:nil="true"/>')
        field, value = match.groups()
        found = [i for i in self.identities.values() if str(i.get(field, i["extended"].get(field, ""))) == value]
        items = "".join(_identity_xml("IdentityInfo", i) for i in found)
        return _soap_answer(action, _result(True, None) + '<a:IdentityInfo i:nil="true"/>'
                            f"<a:IdentityInfoList>{items}</a:IdentityInfoList>")

    def _soap_FindIdentityById(self, action: str, params: dict[str, ET.Element]) -> Response:  # noqa: N802
        identity = self.identities.get(_param(params, "identityId"))
        if identity is None:
            return _soap_answer(action, _result(False, "Identity not found") + '<a:IdentityInfo i:nil="true"/>')
        return _soap_answer(action, _result(True, None) + _identity_xml("IdentityInfo", identity))

    def _soap_GetUserExtensions(self, action: str, params: dict[str, ET.Element]) -> Response:  # noqa: N802
        systems = self.users.get(_param(params, "targetUsername"))
        if systems is None:
            return _soap_answer(action, _result(False, "User not found") + '<a:TelephonySystems i:nil="true"/>')
        parts = []
        for key, names in systems.items():
            system_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, key))
            extensions = "".join(
                f"<a:TelephonySystemExtensionInfo><a:Id>{uuid.uuid4()}</a:Id><a:Name>{escape(name)}</a:Name>"
                f"<a:TelephonySystemId>{system_id}</a:TelephonySystemId><a:UserId>{uuid.uuid4()}</a:UserId>"
                f"<a:Username>{escape(_param(params, 'targetUsername'))}</a:Username></a:TelephonySystemExtensionInfo>"
                for name in names
            )
            parts.append(
                f"<a:TelephonySystemInfo><a:BrevityName>{escape(key)}</a:BrevityName>"
                f"<a:Extensions>{extensions}</a:Extensions><a:Key>{escape(key)}</a:Key>"
                f"<a:Name>{escape(key)}</a:Name><a:OfficeId>{uuid.uuid4()}</a:OfficeId>"
                f"<a:ServerAddress>10.0.0.5</a:ServerAddress></a:TelephonySystemInfo>"
            )
        return _soap_answer(action, _result(True, None) + f"<a:TelephonySystems>{''.join(parts)}</a:TelephonySystems>")

    def _soap_CreatePaymentLink(self, action: str, params: dict[str, ET.Element]) -> Response:  # noqa: N802
        info = params.get("paymentLink")
        if info is None:
            return _soap_fault("paymentLink is required")
        members: dict[str, str] = {}
        order = []
        for child in info:
            if not child.tag.startswith(f"{{{DATA_NS}}}"):
                return _soap_fault("PaymentLinkInfo member outside the DataContract namespace")
            name = child.tag.split("}", 1)[1]
            order.append(name)
            members[name] = child.text or ""
        if order != sorted(order, key=PAYMENT_LINK_MEMBERS.index) or not set(order) <= set(PAYMENT_LINK_MEMBERS):
            return _soap_fault("PaymentLinkInfo members out of DataContract order")
        if members.get("IdentityId") not in self.identities:
            return _soap_answer(action, _result(False, "Identity not found") + '<a:PaymentLink i:nil="true"/>')
        self.payment_links.append(members)
        if not self.payment_link_success:
            return _soap_answer(action, _result(False, "SMS panel is not configured") + '<a:PaymentLink i:nil="true"/>')
        link = f"https://pay.example.invalid/{uuid.uuid4().hex[:10]}"
        return _soap_answer(action, _result(True, None) + f"<a:PaymentLink>{link}</a:PaymentLink>")

    def _soap_FindProductByCode(self, action: str, params: dict[str, ET.Element]) -> Response:  # noqa: N802
        if "code" not in params:
            return _soap_fault("code is required")
        product = self.products.get(_param(params, "code"))
        if product is None:
            return _soap_answer(action, _result(False, "Product not found") + '<a:ProductInfoList i:nil="true"/>')
        found = f"<a:ProductInfoList>{_product_xml(product)}</a:ProductInfoList>"
        return _soap_answer(action, _result(True, None) + found)


def _product_xml(product: dict[str, Any]) -> str:
    """A ProductInfo as WCF writes it: members in alphabetical order, price lists with their lines."""

    def member(name: str, value: object) -> str:
        if value is None or value == "":
            return f'<a:{name} i:nil="true"/>'
        return f"<a:{name}>{escape(str(value))}</a:{name}>"

    other = {"Code": "OTHER-1", "Id": str(uuid.uuid4())}  # a price list lists other products too
    lists = "".join(
        f"<a:PriceListInfo>{member('InvoiceType', invoice_type)}{member('Name', f'{invoice_type} prices')}"
        f"<a:PriceListProducts>"
        + "".join(
            f"<a:PriceListProductInfo><a:Amount>{escape(str(price))}</a:Amount><a:PricingType>Fixed</a:PricingType>"
            f"{member('ProductCode', item['Code'])}{member('ProductId', item['Id'])}</a:PriceListProductInfo>"
            for item, price in ((other, "1"), (product, amount))
        )
        + "</a:PriceListProducts></a:PriceListInfo>"
        for invoice_type, amount in product["price_lists"].items()
    )
    return (
        f'<a:ProductInfo><a:Brand i:nil="true"/><a:BuyAble>false</a:BuyAble>{member("Code", product["Code"])}'
        f'<a:CommisionType i:nil="true"/><a:Commission i:nil="true"/><a:Description i:nil="true"/>'
        f'<a:GroupId>{uuid.uuid4()}</a:GroupId><a:GroupName>Services</a:GroupName>{member("Id", product["Id"])}'
        f"<a:Inventory>false</a:Inventory><a:IsActiveOrderPoint>false</a:IsActiveOrderPoint>"
        f"<a:IsCommission>false</a:IsCommission><a:IsService>true</a:IsService><a:MadeIn i:nil=\"true\"/>"
        f"<a:MinimumAmount i:nil=\"true\"/>{member('Name', product['Name'])}<a:PriceListInfo>{lists}</a:PriceListInfo>"
        f'<a:ProductUnitType i:nil="true"/><a:RefId i:nil="true"/><a:Sellable>true</a:Sellable>'
        f'<a:Taxable>false</a:Taxable><a:TechInfo i:nil="true"/><a:Tollable>false</a:Tollable>'
        f'<a:UnitBuyPrice i:nil="true"/>{member("UnitPrice", product["UnitPrice"])}</a:ProductInfo>'
    )


def _param(params: dict[str, ET.Element], name: str) -> str:
    element = params.get(name)
    return "" if element is None else (element.text or "")


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _result(success: bool, message: str | None, extra: str = "") -> str:
    text = '<a:Message i:nil="true"/>' if message is None else f"<a:Message>{escape(message)}</a:Message>"
    return f"{text}<a:Success>{'true' if success else 'false'}</a:Success>{extra}"


def _soap_answer(action: str, inner: str, *, typed: bool = True) -> Response:
    namespaces = f' xmlns:a="{DATA_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"' if typed else ""
    xml = (
        f'<s:Envelope xmlns:s="{SOAP_ENV_NS}"><s:Body>'
        f'<{action}Response xmlns="{SOAP_CALL_NS}"><{action}Result{namespaces}>{inner}</{action}Result>'
        f"</{action}Response></s:Body></s:Envelope>"
    )
    return Response(xml, status=200, content_type="text/xml; charset=utf-8")


def _soap_fault(reason: str) -> Response:
    xml = (
        f'<s:Envelope xmlns:s="{SOAP_ENV_NS}"><s:Body><s:Fault><faultcode>s:Client</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(reason)}</faultstring></s:Fault></s:Body></s:Envelope>'
    )
    return Response(xml, status=500, content_type="text/xml; charset=utf-8")


def _identity_xml(tag: str, identity: dict[str, Any]) -> str:
    """An IdentityInfo the way WCF writes it: base members first, then alphabetical."""

    def member(name: str, value: object) -> str:
        if value is None or value == "":
            return f'<a:{name} i:nil="true"/>'
        return f"<a:{name}>{escape(str(value))}</a:{name}>"

    props = "".join(
        f"<a:BaseCrmObjectExtendedPropertyInfo><a:Name>{escape(key)}</a:Name><a:UserKey>{escape(key)}</a:UserKey>"
        f"<a:Value>{escape(value)}</a:Value></a:BaseCrmObjectExtendedPropertyInfo>"
        for key, value in identity["extended"].items()
    )
    contacts = "".join(
        f"<a:IdentityContactPhone><a:Id>{uuid.uuid4()}</a:Id><a:IsDefault>{'true' if n == 0 else 'false'}"
        f'</a:IsDefault><a:IsDeleted>false</a:IsDeleted><a:RefId i:nil="true"/>'
        f'<a:ContinuedNumber i:nil="true"/><a:Extension i:nil="true"/>'
        f"<a:PhoneNumber>{escape(number)}</a:PhoneNumber><a:PhoneType>Mobile</a:PhoneType></a:IdentityContactPhone>"
        for n, number in enumerate(identity["phones"])
    )
    return (
        f'<a:{tag} i:type="a:{identity["kind"]}">'
        f"<a:CreatDate>2024-03-01T09:30:00</a:CreatDate>{member('CrmId', identity['CrmId'])}"
        f"<a:CrmObjectTypeCode>person</a:CrmObjectTypeCode><a:CrmObjectTypeIndex>1</a:CrmObjectTypeIndex>"
        f"<a:CrmObjectTypeName>مشتری</a:CrmObjectTypeName><a:ExtendedProperties>{props}</a:ExtendedProperties>"
        f'<a:ModifyDate>2024-03-01T09:30:00</a:ModifyDate><a:ParentCrmObjectId i:nil="true"/>'
        f'<a:RefId i:nil="true"/><a:Tags/>'
        f'<a:AddressContacts/>{member("Balance", identity["Balance"])}<a:Categories/>'
        f"{member('Classification', identity['Classification'])}<a:ColorName i:nil=\"true\"/>"
        f"{member('CustomerNumber', identity['CustomerNumber'])}<a:DontSms>false</a:DontSms>"
        f"<a:Emails/><a:IdentityType>Person</a:IdentityType>{member('NickName', identity['NickName'])}"
        f"{member('OtherUsername', identity['OtherUsername'])}<a:PhoneContacts>{contacts}</a:PhoneContacts>"
        f"{member('SaleUsername', identity['SaleUsername'])}<a:SourceType i:nil=\"true\"/>"
        f"{member('SupportUsername', identity['SupportUsername'])}<a:Website i:nil=\"true\"/>"
        f"</a:{tag}>"
    )
