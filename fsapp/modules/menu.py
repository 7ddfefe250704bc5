"""``menu``: the auto attendant. Prompt, digit options, timeout, attempts."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fsapp.options import Opt, prompt

if TYPE_CHECKING:
    from fsapp.call import CallContext
    from fsapp.options import ModuleConfig

SCHEMA = {
    "intro": prompt(),  # played once, before the options
    "prompt": prompt(),
    "invalid_prompt": prompt(),
    "options": Opt(dict, {}, "destmap"),
    "timeout_ms": Opt(int, 5000, minimum=500, maximum=300_000),
    "max_attempts": Opt(int, 3, minimum=1, maximum=100),
}

OPTION_RE = re.compile(r"[0-9*#]{1,8}")


def validate(module: ModuleConfig) -> list[str]:
    problems = []
    if not module["options"]:
        problems.append("options: a menu needs at least one option")
    for key in module["options"]:
        if not OPTION_RE.fullmatch(key):
            problems.append(f"options.{key}: option keys are DTMF digits (0-9, *, #)")
    return problems


def run(ctx: CallContext, module: ModuleConfig) -> str:
    options = module["options"]
    longest = max(len(k) for k in options)
    pattern = "^(" + "|".join(re.escape(k) for k in sorted(options)) + ")$"
    attempts = module["max_attempts"]
    ctx.io.play(module["intro"])
    for attempt in range(1, attempts + 1):
        digits = ctx.io.ask(
            module["prompt"], min_digits=1, max_digits=longest, timeout_ms=module["timeout_ms"], regex=pattern
        )
        if digits in options:
            ctx.log.debug("menu_selected", module=module.code, digits=digits, attempt=attempt)
            return options[digits]
        ctx.log.info("menu_no_match", module=module.code, attempt=attempt, got="none" if not digits else "invalid")
        if attempt < attempts:
            ctx.io.play(module["invalid_prompt"])
    return module.error
