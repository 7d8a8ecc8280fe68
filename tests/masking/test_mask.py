"""lmforge mask: rules that check what they find (Chinese ID check digits, Luhn, IP addresses),
no false alarms on numbers that only look alike, reversible masking only with the key, and the
command on JSONL, CSV and text files."""

import csv
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

from served import runs  # noqa: E402,F401  (fixture: a tiny NER run among others)

from lmforge.masking.mask import Masker  # noqa: E402
from lmforge.masking.rules import ID_CHECK, ID_WEIGHTS, find_rule_spans, luhn  # noqa: E402


def cn_id(rng: random.Random, valid: bool = True) -> str:
    body = f"{rng.randint(110000, 659999)}{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    check = ID_CHECK[sum(int(d) * w for d, w in zip(body, ID_WEIGHTS)) % 11]
    if not valid:
        check = next(c for c in "0123456789X" if c != check)
    return body + check


def card(rng: random.Random, valid: bool = True) -> str:
    digits = [4] + [rng.randint(0, 9) for _ in range(14)]
    for last in range(10):
        if luhn("".join(map(str, digits + [last]))) == valid:
            return "".join(map(str, digits + [last]))
    raise AssertionError


def kinds(text: str) -> list[tuple[str, str]]:
    return [(s.type, s.text) for s in find_rule_spans(text)]


def test_checked_numbers_are_found_and_near_misses_are_not():
    rng = random.Random(0)
    for _ in range(200):
        good, bad = cn_id(rng), cn_id(rng, valid=False)
        assert kinds(f"身份证号{good}。") == [("cn_id", good)]
        assert ("cn_id", bad) not in kinds(f"身份证号{bad}。")
        number = card(rng)
        spaced = " ".join(number[i : i + 4] for i in range(0, 16, 4))
        assert kinds(f"card {spaced} ok") == [("bank_card", spaced)]
        assert kinds(f"card {number}.") == [("bank_card", number)]
        assert not any(k == "bank_card" for k, _ in kinds(f"card {card(rng, valid=False)}."))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("write to a.b-c+tag@mail.example.org today", [("email", "a.b-c+tag@mail.example.org")]),
        ("call 13912345678 or +86 139-1234-5678", [("phone", "13912345678"), ("phone", "+86 139-1234-5678")]),
        ("US +1 (415) 555-0123, UK 020 7946 0958", [("phone", "+1 (415) 555-0123"), ("phone", "020 7946 0958")]),
        ("hosts 192.168.0.1 and 2001:db8::8a2e:370:7334", [("ip", "192.168.0.1"), ("ip", "2001:db8::8a2e:370:7334")]),
        ("version 1.2.3.4.5, 999.1.1.1, at 12:30:45 on 2024-05-06, total 1,234,567.89 yuan", []),
        ("order 20240506123, zip 100871, year 2024, pi 3.14159", []),
        ("手机号020 7946 0958已注册，邮箱li@qq.com谢谢", [("phone", "020 7946 0958"), ("email", "li@qq.com")]),
        ("身份证号码227278195903222620", []),  # an ID with a wrong check digit, Luhn-valid: not a card
    ],
)
def test_rules_on_real_looking_text(text, expected):
    assert kinds(text) == expected


def test_reversible_masking_needs_the_key():
    text = ["mail jane@example.com, phone 13812345678"]
    masked, spans = Masker(("email", "phone"), key="k1").mask(text)
    assert "jane@example.com" not in masked[0] and len(spans[0]) == 2
    assert Masker(("email",), key="k1").unmask(masked[0]) == text[0]
    assert Masker(("email",), key="k2").unmask(masked[0]) == masked[0]  # another key turns nothing back
    with pytest.raises(Exception, match="LMFORGE_MASK_KEY"):
        Masker(("email",)).unmask(masked[0])


def test_names_come_from_the_ner_run(runs):  # noqa: F811
    masker = Masker(("person", "place", "organization", "email"), ner_run=str(runs["ner"]))
    text = "Alice Smith wrote to bob@example.com from Paris"
    entities = masker.predictor.predict_entities([text])[0]["entities"]
    masked, spans = masker.mask([text])
    names = [s for s in spans[0] if s.type != "email"]
    email = next(s for s in spans[0] if s.type == "email")
    for e in entities:  # every name is masked, but where the e-mail rule took its characters already
        if e["label"] in ("PER", "LOC", "ORG"):
            kept = any(s.start == e["start"] and s.end == e["end"] for s in names)
            assert kept or (e["start"] < email.end and email.start < e["end"]), e
    for s in names:
        assert text[s.start : s.end] == s.text and f"[{s.type.upper()}]" in masked[0]


def test_the_command_masks_jsonl_csv_and_text(tmp_path, run_cli, monkeypatch):
    rows = [{"id": 1, "text": "mail jane@example.com"}, {"id": 2, "text": "卡号 4111 1111 1111 1111"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    code, out, err = run_cli("mask", "--input", str(src), "--output", str(tmp_path / "out.jsonl"))
    assert code == 0, err
    assert "bank_card 1, email 1" in out and "give --ner RUN" in err
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert got == [{"id": 1, "text": "mail [EMAIL]"}, {"id": 2, "text": "卡号 [BANK_CARD]"}]
    table = tmp_path / "in.csv"
    table.write_text('id,comment\n1,call 13812345678\n2,"ip 10.1.2.3, fine"\n')
    code, _, err = run_cli("mask", "--input", str(table), "--output", str(tmp_path / "out.csv"), "--field", "comment")
    assert code == 0, err
    assert list(csv.reader((tmp_path / "out.csv").open())) == [
        ["id", "comment"],
        ["1", "call [PHONE]"],
        ["2", "ip [IP], fine"],
    ]
    lines = tmp_path / "in.txt"
    lines.write_text("a@b.io\nnothing here\n")
    monkeypatch.setenv("LMFORGE_MASK_KEY", "secret")
    assert run_cli("mask", "--input", str(lines), "--output", str(tmp_path / "m.txt"), "--types", "email")[0] == 0
    assert "a@b.io" not in (tmp_path / "m.txt").read_text()
    assert run_cli("mask", "--input", str(tmp_path / "m.txt"), "--output", str(tmp_path / "b.txt"), "--unmask")[0] == 0
    assert (tmp_path / "b.txt").read_text() == lines.read_text()
    for args, words in [
        (["--types", "email,ssn"], "--types ssn"),
        (["--field", "body"], "no text field 'body'"),
        (["--ner", str(src)], ""),
    ]:
        code, _, err = run_cli("mask", "--input", str(src), "--output", str(tmp_path / "x.jsonl"), *args)
        assert code != 0 and err.startswith("lmforge: error:") and words in err
    code, _, err = run_cli("mask", "--input", str(src), "--output", str(src))
    assert code != 0 and "overwrite the input" in err


def test_an_existing_output_is_replaced_only_when_asked(tmp_path, run_cli):
    # the same check guards augment, attack, predict and explain (cli.common.output_file)
    src = tmp_path / "in.txt"
    src.write_text("mail me at ann@example.com\n", encoding="utf-8")
    mine = tmp_path / "mine.txt"
    mine.write_text("precious\n", encoding="utf-8")
    code, _, err = run_cli("mask", "--input", str(src), "--output", str(mine))
    assert (
        code == 2 and err.strip() == f"lmforge: error: --output {mine}: already exists; give --overwrite to replace it"
    )
    assert mine.read_text() == "precious\n"
    code, _, err = run_cli("mask", "--input", str(src), "--output", str(tmp_path / "no" / "out.txt"))
    assert code == 2 and "no such folder" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("mask", "--input", str(src), "--output", str(tmp_path))
    assert code == 2 and "is a folder" in err
    assert run_cli("mask", "--input", str(src), "--output", str(mine), "--overwrite")[0] == 0
    assert mine.read_text() == "mail me at [EMAIL]\n"
