"""Rules for personal data with a fixed shape. Each rule finds candidates with a regular expression
and keeps those that check out: a Chinese resident ID's check digit and birth date, a bank card's
Luhn digit, an IP address that parses. Spans never overlap: where two rules claim the same
characters, the stricter one (ID, then card, then phone) keeps them."""

import datetime
import ipaddress
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str
    text: str


EMAIL = re.compile(
    r"(?<![A-Za-z0-9_.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9_-])"
)
CN_ID = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{16}[0-9Xx](?![0-9A-Za-z])")
CARD = re.compile(  # 13-19 digits together, in groups of four, or Amex's 4-6-5
    r"(?<![\d+-])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{5})(?![\d-])"
)
CN_MOBILE = re.compile(r"(?<![\d+])(?<!\d[ -])(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)(?![ -]\d)")
PHONE = re.compile(  # not a piece of a longer run of digit groups (a card, an account number)
    r"(?<![A-Za-z0-9_+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,5}(?![A-Za-z0-9_])(?![ .-]\d)"
)
# A full stop after an address ends the sentence; one followed by a digit makes it a longer number.
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d)(?!\.\d)")
IPV6 = re.compile(
    r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![A-Za-z0-9_:])(?!\.\d)"
)  # checked by ipaddress
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


def valid_cn_id(text: str) -> bool:
    """GB 11643-1999: the 18th character checks the first 17 (weights mod 11), and digits 7-14
    are a real birth date."""
    digits = text.upper()
    if ID_CHECK[sum(int(d) * w for d, w in zip(digits[:17], ID_WEIGHTS)) % 11] != digits[17]:
        return False
    return _birth_date(digits)


def luhn(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return total % 10 == 0


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _birth_date(digits: str) -> bool:
    try:
        born = datetime.date(int(digits[6:10]), int(digits[10:12]), int(digits[12:14]))
    except ValueError:
        return False
    return datetime.date(1900, 1, 1) <= born <= datetime.date.today()


def _card(text: str) -> bool:
    """Luhn-valid, 13-19 digits, and not a Chinese ID with a wrong check digit (18 digits in a
    row around a birth date: an ID mistyped, not a card)."""
    digits = re.sub(r"\D", "", text)
    if len(digits) == 18 and text.isdigit() and _birth_date(digits):
        return False
    return 13 <= len(digits) <= 19 and luhn(digits) and len(set(digits)) > 1


# (type, pattern, check), strictest first: earlier rules keep their characters.
RULES = (
    ("email", EMAIL, None),
    ("cn_id", CN_ID, valid_cn_id),
    ("bank_card", CARD, _card),
    ("ip", IPV4, _ip),
    ("ip", IPV6, _ip),
    ("phone", CN_MOBILE, None),
    ("phone", PHONE, lambda t: 7 <= sum(c.isdigit() for c in t) <= 15),
)
RULE_TYPES = ("email", "phone", "cn_id", "bank_card", "ip")


def find_rule_spans(text: str, types: tuple[str, ...] = RULE_TYPES) -> list[Span]:
    """The rule spans of ``text`` for ``types``, in order, without overlaps."""
    taken = [False] * len(text)
    found: list[Span] = []
    for kind, pattern, check in RULES:
        if kind not in types:
            continue
        for m in pattern.finditer(text):
            if any(taken[m.start() : m.end()]) or (check is not None and not check(m.group())):
                continue
            found.append(Span(m.start(), m.end(), kind, m.group()))
            taken[m.start() : m.end()] = [True] * (m.end() - m.start())
    return sorted(found, key=lambda s: s.start)
