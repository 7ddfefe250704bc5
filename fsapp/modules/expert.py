"""``case_expert`` (seed 003): bridge to the identified customer's own responsible person.

No customer, no responsible person for the role, no answer or busy -> ``error``;
a talk that ended with the caller still on the line -> ``next``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsapp import flow
from fsapp.options import Opt, prompt

if TYPE_CHECKING:
    from fsapp.call import CallContext
    from fsapp.options import ModuleConfig

SCHEMA = {
    "role": Opt(str, "sales", choices=("sales", "support", "other")),
    "ring_seconds": Opt(int, 25, minimum=1, maximum=3600),
    "connecting": prompt(),
    "unavailable": prompt(),
}


def run(ctx: CallContext, m: ModuleConfig) -> str:
    customer = ctx.customer
    if customer is None:
        ctx.log.info("expert_no_customer", module=m.code)
        return m.error
    ext = (customer.responsible or {}).get(m["role"], "")
    if not ext or not flow.EXT_RE.fullmatch(str(ext)):
        ctx.log.info("expert_no_responsible", module=m.code, role=m["role"], customer_id=customer.id)
        ctx.io.play(m["unavailable"])
        return m.error
    ctx.io.play(m["connecting"])
    ctx.log.info("bridge_started", module=m.code, target=f"ext:{ext}", role=m["role"])
    result = ctx.io.bridge(flow.Dest("ext", str(ext)), m["ring_seconds"])
    ctx.log.info("bridge_ended", module=m.code, target=f"ext:{ext}", outcome=result.outcome,
                 disposition=result.disposition, talk_seconds=result.talk_seconds)
    if result.answered:
        return m.next
    ctx.io.play(m["unavailable"])
    return m.error
