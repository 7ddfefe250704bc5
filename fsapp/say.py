"""Amounts to number prompts (spec section 7).

An amount becomes a list of prompt names in the ``digits`` and ``currency`` groups,
in the order they are played.  Persian (``fa``) joins the parts of a number with
the connective "و" (``digits/and``): 125000 is "صد و بیست و پنج هزار ریال".
English (``en``) says "one hundred twenty-five thousand rials".
"""

from __future__ import annotations

MAX_AMOUNT = 999_999_999_999

LANGUAGES = ("fa", "en")
CURRENCIES = {"rial": "currency/rial", "toman": "currency/toman", "": None}

# Scale words from the largest down; the last entry is the plain hundreds group.
_SCALES = ((1_000_000_000, "digits/billion"), (1_000_000, "digits/million"), (1_000, "digits/thousand"), (1, None))
_AND = "digits/and"


def _below_thousand(n: int, joiner: str | None) -> list[str]:
    """Prompts for 1 <= n <= 999, parts joined by ``joiner`` when it is set."""
    parts: list[list[str]] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        parts.append([f"digits/{hundreds * 100}"])
    if rest:
        if rest < 20:
            parts.append([f"digits/{rest}"])
        else:
            tens, units = divmod(rest, 10)
            parts.append([f"digits/{tens * 10}"])
            if units:
                parts.append([f"digits/{units}"])
    return _join(parts, joiner)


def _join(parts: list[list[str]], joiner: str | None) -> list[str]:
    out: list[str] = []
    for i, part in enumerate(parts):
        if i and joiner:
            out.append(joiner)
        out.extend(part)
    return out


def _number_fa(n: int) -> list[str]:
    groups: list[list[str]] = []
    for scale, word in _SCALES:
        group, n = divmod(n, scale)
        if not group:
            continue
        if word == "digits/thousand" and group == 1:
            groups.append([word])  # "هزار", not "یک هزار"
        else:
            groups.append(_below_thousand(group, _AND) + ([word] if word else []))
    return _join(groups, _AND)


def _number_en(n: int) -> list[str]:
    out: list[str] = []
    for scale, word in _SCALES:
        group, n = divmod(n, scale)
        if group:
            out.extend(_below_thousand(group, None))
            if word:
                out.append(word)
    return out


_SPEAKERS = {"fa": _number_fa, "en": _number_en}


def _check_language(language: str) -> None:
    if language not in _SPEAKERS:
        raise ValueError(f"unknown language {language!r} (known: {', '.join(LANGUAGES)})")


def amount_prompts(amount: int, language: str, currency: str = "rial") -> list[str]:
    """The prompt names that speak ``amount`` in ``language``, then the currency word.

    ``currency`` is "rial", "toman", or "" for no currency word.
    """
    _check_language(language)
    if type(amount) is not int:  # bool is an int subclass and is refused too
        raise ValueError(f"amount must be an integer, not {type(amount).__name__} {amount!r}")
    if amount < 0 or amount > MAX_AMOUNT:
        raise ValueError(f"amount {amount} is outside 0..{MAX_AMOUNT}")
    if currency not in CURRENCIES:
        raise ValueError(f"unknown currency {currency!r} (known: rial, toman, or empty)")
    words = ["digits/0"] if amount == 0 else _SPEAKERS[language](amount)
    currency_prompt = CURRENCIES[currency]
    return words + [currency_prompt] if currency_prompt else words


def _all_number_prompts(language: str) -> tuple[str, ...]:
    names = [f"digits/{n}" for n in range(20)]
    names += [f"digits/{n}" for n in range(20, 100, 10)]
    names += [f"digits/{n}" for n in range(100, 1000, 100)]
    names += ["digits/thousand", "digits/million", "digits/billion"]
    if language == "fa":
        names.append(_AND)
    names += [p for p in CURRENCIES.values() if p]
    return tuple(names)


NUMBER_PROMPTS: dict[str, tuple[str, ...]] = {lang: _all_number_prompts(lang) for lang in LANGUAGES}


def number_prompt_names(language: str) -> list[str]:
    """Every prompt name ``amount_prompts`` can return for ``language``."""
    _check_language(language)
    return list(NUMBER_PROMPTS[language])
