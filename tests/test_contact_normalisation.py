"""Email and phone normalisation: the fast paths for common forms give exactly the libraries' answers."""

import random

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

from app.core.settings import get_settings
from app.schemas.customer import normalise_email, normalise_phone

ADDRESSES = [
    "zhang.wei_12@qq.com",
    "Zhang.Wei_12@QQ.COM",
    "POSTMASTER@Example.COM",
    "a+tag@sub.example.co.uk",
    "o'brien@example.ie",
    "x@xn--fiqs8s.cn",
    "x@中国.cn",
    "用户@例子.广告",
    "a@localhost",
    "a@example.local",
    "a@example.test",
    "a@example.invalid",
    "a@123.456",
    "a@example.c0m",
    "a@-example.com",
    "a@example-.com",
    "a@exa_mple.com",
    "a@example..com",
    "a@.example.com",
    "a@example.com.",
    ".a@example.com",
    "a.@example.com",
    "a..b@example.com",
    '"a b"@example.com',
    "a b@example.com",
    " a@example.com",
    "a@b@example.com",
    "@example.com",
    "a@",
    "a",
    "Zhang Wei <zw@example.com>",
    "a@[127.0.0.1]",
    "a@" + "x" * 63 + ".com",
    "a@" + "x" * 64 + ".com",
    "l" * 64 + "@example.com",
    "l" * 65 + "@example.com",
    "a@" + ".".join(["x" * 60] * 4) + ".com",
    "l" * 60 + "@" + ".".join(["y" * 60] * 3) + ".cn",
    "l" * 64 + "@" + ".".join(["y" * 60] * 3) + ".com",
    # 254 and 255 characters: the longest address accepted, and one more.
    "l" * 62 + "@" + "y" * 63 + "." + "y" * 63 + "." + "y" * 60 + ".cn",
    "l" * 62 + "@" + "y" * 63 + "." + "y" * 63 + "." + "y" * 61 + ".cn",
    # Longer in UTF-8 once the IDNA domain is shown in Unicode.
    "l" * 230 + "@xn--fiqs8s.xn--fiqs8s.cn",
    "a@xn--ls8h.la",
    "a@xn--zz.com",
]


def library(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        return f"refused: not a valid email address: {exc}"


@pytest.mark.parametrize("address", ADDRESSES)
def test_normalise_email_answers_as_email_validator(address: str) -> None:
    try:
        ours = normalise_email(address)
    except ValueError as exc:
        ours = f"refused: {exc}"
    assert ours == library(address)
    # Asked again (the domain's verdict is cached now), the answer is the same.
    try:
        again = normalise_email(address)
    except ValueError as exc:
        again = f"refused: {exc}"
    assert again == ours


def phonenumbers_answer(value: str) -> str:
    """What phonenumbers alone makes of a number, read in the default region (CN)."""
    try:
        number = phonenumbers.parse(value, "CN")
    except phonenumbers.NumberParseException:
        return "refused: not a phone number"
    if not phonenumbers.is_valid_number(number):
        return "refused: not a valid phone number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_normalise_phone_answers_as_phonenumbers_for_every_mobile_prefix() -> None:
    assert get_settings().default_phone_region == "CN"
    rng = random.Random(11)
    numbers = [f"1{prefix:02d}{rng.randrange(10**8):08d}" for prefix in range(0, 100) for _ in range(6)]
    numbers += ["17400012345", "17406012345", "16100012345", "17951012345", "12593000000", "11800138000"]
    for number in numbers:
        a, b, c = number[:3], number[3:7], number[7:]
        for written in (
            number,
            f"{a} {b} {c}",
            f"{a}-{b}-{c}",
            f"+86{number}",
            f"+86 {a} {b} {c}",
            f"+86-{a}-{b}-{c}",
            f" {number} ",
            f"86{number}",
            f"0086{number}",
            f"+86 {a}{b} {c}",
            f"({a}) {b} {c}",
        ):
            try:
                ours = normalise_phone(written)
            except ValueError as exc:
                ours = f"refused: {exc}"
            assert ours == phonenumbers_answer(written), written


def test_a_plain_mainland_mobile_skips_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(*_: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(phonenumbers, "parse", no_parsing)
    assert normalise_phone("138 0013 8000") == normalise_phone("+86-138-0013-8000") == "+8613800138000"
    monkeypatch.undo()
    # An invalid one goes on to the parser, for its own answer.
    with pytest.raises(ValueError, match="not a valid phone number"):
        normalise_phone("154 0013 8000")
