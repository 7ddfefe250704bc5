"""A customer's page: their details from the CRM (or the local directory), their whole call
history (keyset pages, as the journal) and their charges and debt from the ledger."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template, request

from fsapp import journal
from fsapp.crm import CRMError
from fsapp.store import StorageError
from fsapp.web.context import current_config, current_store
from fsapp.web.views import RowLinks

customer = Blueprint("customer", __name__)

PAGE = 50
# The journal's columns a customer's history shows, after the date and time (views.COLUMNS: all of them)
COLUMNS = ("status", "direction", "caller", "called", "extension", "queue", "talk_seconds", "hold_seconds",
           "missed_cause", "too_long", "mos", "recording", "charge")


@customer.route("/customer/<path:customer_id>")
def page(customer_id: str) -> Any:
    store = current_store()
    after, before = request.args.get("after", ""), request.args.get("before", "")
    if before and not before.isdigit():
        abort(400, f"before: not a ledger row id: {before!r}")
    calls = store.page_calls(customer=customer_id, order="started_at", descending=True, after=after,
                             limit=PAGE + 1)
    charges = store.recent_charges(customer=customer_id, before=int(before or 0), limit=PAGE + 1)
    details, source, problem = crm_details(customer_id)
    if details is None and not calls and not charges and not after and not before:
        abort(404, f"no customer {customer_id!r}: not in the CRM, the directory, the journal or the ledger")
    latest = store.recent_charges(customer=customer_id, limit=1)
    return render_template(
        "customer.html", customer_id=customer_id, details=details, source=source, problem=problem,
        fallback=calls[0] if calls else {},
        calls=[{**r, "mos": journal.call_mos(r)} for r in calls[:PAGE]], columns=COLUMNS, links=RowLinks(),
        poor_mos=current_config().analysis.min_mos or 3.5,
        next_after=calls[PAGE - 1]["uuid"] if len(calls) > PAGE else "",
        charges=charges[:PAGE], next_before=charges[PAGE - 1]["id"] if len(charges) > PAGE else "",
        after=after, before=before, totals=store.charge_totals(customer_id),
        debt=_debt(details, latest))


def crm_details(customer_id: str) -> tuple[dict[str, Any] | None, str, str]:
    """(details, where from: 'crm' or 'directory', why the CRM could not say): the CRM first
    when it is not the local directory, then the directory."""
    problem = ""
    if current_config().crm.kind != "local":
        try:
            found = _crm().find_by_number(customer_id)
        except (CRMError, ValueError) as exc:  # ValueError: a CRM section that cannot work here
            found, problem = None, f"the CRM did not answer: {exc}"
        if found is not None and customer_id in (found.id, found.number):
            return {"id": found.id, "number": found.number, "name": found.name, "type": found.type,
                    "mobile": found.mobile, "phones": list(found.phones), "debt": None,
                    **{role: found.responsible.get(role, "") for role in ("sales", "support", "other")}}, "crm", ""
    try:
        row = current_store().customer(customer_id)
    except StorageError as exc:
        return None, "", f"the directory could not be read: {exc}"
    return (row, "directory", problem) if row else (None, "", problem)


def _crm() -> Any:
    """The daemon's current CRM inside ``fsapp serve``; else one made for the console, once."""
    crm_of = current_app.config.get("FSAPP_CRM_OF")
    if crm_of is None:
        from fsapp.app import NullMetrics, make_crm

        crm = make_crm(current_config(), current_store(), NullMetrics())
        current_app.config["FSAPP_CRM_OF"] = crm_of = lambda: crm
    return crm_of()


def _debt(details: dict[str, Any] | None, latest: list[dict[str, Any]]) -> int | None:
    """The directory's debt; for a customer of another CRM, the debt after their last charge."""
    if details is not None and details.get("debt") is not None:
        return int(details["debt"])
    return int(latest[0]["debt_after"]) if latest else None
