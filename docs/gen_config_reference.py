"""Regenerate the config reference in docs/reference/config.md from the schema.

    python docs/gen_config_reference.py          # rewrite the generated block in place
    python docs/gen_config_reference.py --check  # exit 1 if the block is out of date

The block sits between the two marker lines below; everything outside them is hand-written and
left alone. The table itself is ``python -m lmforge.config.reference``.
"""

import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "reference" / "config.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
COMMAND = "python docs/gen_config_reference.py"


def split(text: str) -> tuple[str, str, str]:
    """The page as (before the block, the block, after the block); the markers stay outside."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{PAGE}: needs exactly one '{START}' line followed by one '{END}' line")
    head, rest = text.split(START)
    block, tail = rest.split(END)
    return head, block, tail


def generated() -> str:
    from lmforge.config.reference import markdown

    return markdown()


def main(argv: list[str]) -> int:
    text = PAGE.read_text(encoding="utf-8")
    head, block, tail = split(text)
    table = generated()
    if "--check" in argv:
        if block.strip() == table.strip():
            return 0
        print(f"{PAGE} is out of date: run {COMMAND}", file=sys.stderr)
        return 1
    PAGE.write_text(f"{head}{START}\n\n{table}\n\n{END}{tail}", encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
