"""Module kinds, registered in one explicit table.

A kind is a ``Kind``: the function that runs it, the schema of its own keys, a
validator for rules the schema cannot say (and one for rules that depend on the
``[crm]`` kind), and two facts the config checks use.
``run(ctx, module) -> str`` returns the destination the call goes to next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fsapp.modules import balance, bill, club, expert, menu

if TYPE_CHECKING:
    from fsapp.call import CallContext
    from fsapp.options import ModuleConfig, Opt


def _no_rules(module: ModuleConfig) -> list[str]:
    return []


def _no_crm_rules(module: ModuleConfig, crm_kind: str) -> list[str]:
    return []


@dataclass(frozen=True)
class Kind:
    run: Callable[[CallContext, ModuleConfig], str]
    schema: Mapping[str, Opt]
    validate: Callable[[ModuleConfig], list[str]] = _no_rules
    crm_rules: Callable[[ModuleConfig, str], list[str]] = _no_crm_rules  # rules that depend on [crm] kind
    bridges: bool = False  # hands the caller to a person itself (has its own way out)
    speaks_numbers: bool = False  # plays amounts from the number prompts


KINDS: dict[str, Kind] = {
    "menu": Kind(menu.run, menu.SCHEMA, menu.validate),
    "customer_club": Kind(club.run, club.SCHEMA, club.validate),
    "balance": Kind(balance.run, balance.SCHEMA, balance.validate, balance.crm_rules, speaks_numbers=True),
    "case_expert": Kind(expert.run, expert.SCHEMA),
    "telephone_bill": Kind(bill.run, bill.SCHEMA, bill.validate, bridges=True, speaks_numbers=True),
}
