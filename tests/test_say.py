import pytest

from fsapp.say import MAX_AMOUNT, amount_prompts, number_prompt_names

# amount -> expected prompts without a currency word, written out in full.
FA = {
    0: "digits/0",
    1: "digits/1",
    5: "digits/5",
    10: "digits/10",
    11: "digits/11",
    12: "digits/12",
    13: "digits/13",
    14: "digits/14",
    15: "digits/15",
    16: "digits/16",
    17: "digits/17",
    18: "digits/18",
    19: "digits/19",
    20: "digits/20",
    21: "digits/20 digits/and digits/1",
    35: "digits/30 digits/and digits/5",
    99: "digits/90 digits/and digits/9",
    100: "digits/100",
    101: "digits/100 digits/and digits/1",
    110: "digits/100 digits/and digits/10",
    119: "digits/100 digits/and digits/19",
    120: "digits/100 digits/and digits/20",
    125: "digits/100 digits/and digits/20 digits/and digits/5",
    200: "digits/200",
    999: "digits/900 digits/and digits/90 digits/and digits/9",
    1000: "digits/thousand",
    1001: "digits/thousand digits/and digits/1",
    1010: "digits/thousand digits/and digits/10",
    1100: "digits/thousand digits/and digits/100",
    1999: "digits/thousand digits/and digits/900 digits/and digits/90 digits/and digits/9",
    2000: "digits/2 digits/thousand",
    2001: "digits/2 digits/thousand digits/and digits/1",
    10000: "digits/10 digits/thousand",
    21000: "digits/20 digits/and digits/1 digits/thousand",
    100000: "digits/100 digits/thousand",
    101000: "digits/100 digits/and digits/1 digits/thousand",
    125000: "digits/100 digits/and digits/20 digits/and digits/5 digits/thousand",
    999999: "digits/900 digits/and digits/90 digits/and digits/9 digits/thousand"
    " digits/and digits/900 digits/and digits/90 digits/and digits/9",
    1000000: "digits/1 digits/million",
    1000001: "digits/1 digits/million digits/and digits/1",
    1001000: "digits/1 digits/million digits/and digits/thousand",
    1200000: "digits/1 digits/million digits/and digits/200 digits/thousand",
    1250500: "digits/1 digits/million digits/and digits/200 digits/and digits/50 digits/thousand digits/and digits/500",
    2000000: "digits/2 digits/million",
    10000000: "digits/10 digits/million",
    1000000000: "digits/1 digits/billion",
    1000001000: "digits/1 digits/billion digits/and digits/thousand",
    2500000000: "digits/2 digits/billion digits/and digits/500 digits/million",
    999999999999: "digits/900 digits/and digits/90 digits/and digits/9 digits/billion"
    " digits/and digits/900 digits/and digits/90 digits/and digits/9 digits/million"
    " digits/and digits/900 digits/and digits/90 digits/and digits/9 digits/thousand"
    " digits/and digits/900 digits/and digits/90 digits/and digits/9",
}

EN = {
    0: "digits/0",
    1: "digits/1",
    5: "digits/5",
    10: "digits/10",
    11: "digits/11",
    12: "digits/12",
    13: "digits/13",
    14: "digits/14",
    15: "digits/15",
    16: "digits/16",
    17: "digits/17",
    18: "digits/18",
    19: "digits/19",
    20: "digits/20",
    21: "digits/20 digits/1",
    35: "digits/30 digits/5",
    99: "digits/90 digits/9",
    100: "digits/100",
    101: "digits/100 digits/1",
    110: "digits/100 digits/10",
    119: "digits/100 digits/19",
    120: "digits/100 digits/20",
    125: "digits/100 digits/20 digits/5",
    200: "digits/200",
    999: "digits/900 digits/90 digits/9",
    1000: "digits/1 digits/thousand",
    1001: "digits/1 digits/thousand digits/1",
    1010: "digits/1 digits/thousand digits/10",
    1100: "digits/1 digits/thousand digits/100",
    1999: "digits/1 digits/thousand digits/900 digits/90 digits/9",
    2000: "digits/2 digits/thousand",
    2001: "digits/2 digits/thousand digits/1",
    10000: "digits/10 digits/thousand",
    21000: "digits/20 digits/1 digits/thousand",
    100000: "digits/100 digits/thousand",
    101000: "digits/100 digits/1 digits/thousand",
    125000: "digits/100 digits/20 digits/5 digits/thousand",
    999999: "digits/900 digits/90 digits/9 digits/thousand digits/900 digits/90 digits/9",
    1000000: "digits/1 digits/million",
    1000001: "digits/1 digits/million digits/1",
    1001000: "digits/1 digits/million digits/1 digits/thousand",
    1200000: "digits/1 digits/million digits/200 digits/thousand",
    1250500: "digits/1 digits/million digits/200 digits/50 digits/thousand digits/500",
    2000000: "digits/2 digits/million",
    10000000: "digits/10 digits/million",
    1000000000: "digits/1 digits/billion",
    1000001000: "digits/1 digits/billion digits/1 digits/thousand",
    2500000000: "digits/2 digits/billion digits/500 digits/million",
    999999999999: "digits/900 digits/90 digits/9 digits/billion digits/900 digits/90 digits/9 digits/million"
    " digits/900 digits/90 digits/9 digits/thousand digits/900 digits/90 digits/9",
}


def test_tables_are_large_enough():
    """The tables below cover at least 40 amounts per language."""
    assert len(FA) >= 40 and len(EN) >= 40


@pytest.mark.parametrize(("amount", "expected"), FA.items())
def test_fa_amounts(amount, expected):
    """Persian amounts follow the table, parts joined with digits/and."""
    assert amount_prompts(amount, "fa", currency="") == expected.split()


@pytest.mark.parametrize(("amount", "expected"), EN.items())
def test_en_amounts(amount, expected):
    """English amounts follow the table, with no connective."""
    assert amount_prompts(amount, "en", currency="") == expected.split()


def test_fa_spec_example_with_rial():
    """The spec's own example: 125000 in Persian is "صد و بیست و پنج هزار ریال"."""
    assert amount_prompts(125000, "fa") == [
        "digits/100",
        "digits/and",
        "digits/20",
        "digits/and",
        "digits/5",
        "digits/thousand",
        "currency/rial",
    ]


def test_en_rial_is_the_default_currency():
    """English ends with currency/rial when no currency is given."""
    assert amount_prompts(125000, "en") == ["digits/100", "digits/20", "digits/5", "digits/thousand", "currency/rial"]


def test_toman_currency():
    """currency="toman" ends the list with currency/toman."""
    assert amount_prompts(1200000, "fa", currency="toman") == [
        "digits/1",
        "digits/million",
        "digits/and",
        "digits/200",
        "digits/thousand",
        "currency/toman",
    ]


def test_zero_with_currency():
    """Zero is digits/0 followed by the currency word."""
    assert amount_prompts(0, "fa") == ["digits/0", "currency/rial"]
    assert amount_prompts(0, "en", currency="toman") == ["digits/0", "currency/toman"]


@pytest.mark.parametrize("amount", [-1, MAX_AMOUNT + 1, 10**15])
def test_out_of_range_amounts_are_refused(amount):
    """Negative amounts and amounts above 999,999,999,999 raise ValueError."""
    with pytest.raises(ValueError, match="outside"):
        amount_prompts(amount, "fa")


@pytest.mark.parametrize("amount", [1.0, "100", None, True])
def test_non_integer_amounts_are_refused(amount):
    """Floats, strings, None and booleans raise ValueError."""
    with pytest.raises(ValueError, match="integer"):
        amount_prompts(amount, "en")


def test_unknown_language_is_named():
    """An unknown language raises ValueError naming it."""
    with pytest.raises(ValueError, match="'de'"):
        amount_prompts(5, "de")
    with pytest.raises(ValueError, match="'de'"):
        number_prompt_names("de")


def test_unknown_currency_is_named():
    """An unknown currency raises ValueError naming it."""
    with pytest.raises(ValueError, match="'dollar'"):
        amount_prompts(5, "fa", currency="dollar")


def test_fa_number_prompt_names_are_exactly_the_reachable_ones():
    """number_prompt_names("fa") equals every prompt amount_prompts can return in Persian."""
    seen = set()
    for amount in list(range(1000)) + [1000, 2000, 10**6, 10**9]:
        for currency in ("rial", "toman"):
            seen.update(amount_prompts(amount, "fa", currency=currency))
    assert seen == set(number_prompt_names("fa"))
    assert len(number_prompt_names("fa")) == 43


def test_en_number_prompt_names_are_exactly_the_reachable_ones():
    """number_prompt_names("en") equals every prompt amount_prompts can return in English, without digits/and."""
    seen = set()
    for amount in list(range(1000)) + [1000, 10**6, 10**9]:
        for currency in ("rial", "toman"):
            seen.update(amount_prompts(amount, "en", currency=currency))
    assert seen == set(number_prompt_names("en"))
    assert "digits/and" not in seen
