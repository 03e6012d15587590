"""Write the rule -> settings -> step function table into docs/workflow.md (between the marker comments).

Usage: ``.venv/bin/python scripts/rule_table.py [--check]``. ``--check`` exits 1 if the table in the docs is not
the one the code gives (tests/test_docs.py runs it), so the table cannot drift from the workflow.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "workflow.md"
BEGIN, END = "<!-- rule-table:begin -->", "<!-- rule-table:end -->"


def rule_docs() -> dict[str, tuple[str, str]]:
    """rule -> (rule file, first sentence of its docstring), read from workflow/rules/*.smk."""
    out = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r'^rule (\w+):\n    """(.*?)"""', text, flags=re.S | re.M):
            doc = " ".join(m.group(2).split())
            out[m.group(1)] = (smk.relative_to(ROOT).as_posix(), doc.split(". ")[0].rstrip("."))
    return out


def table() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from steerlimits.settings import settings_class
    from steerlimits.steps import STEPS

    docs = rule_docs()
    lines = ["| rule | what it does | settings (dataclass) | step function | rule file |", "|---|---|---|---|---|"]
    for rule, module in STEPS.items():
        cls = settings_class(rule)
        where, doc = docs.get(rule, ("(not in the workflow)", ""))
        lines.append(f"| `{rule}` | {doc} | `{cls.__module__}.{cls.__name__}` | `{module}.{rule}` | `{where}` |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{table()}\n{END}", text, flags=re.S)
    if "--check" in argv:
        if new != text:
            print(f"{DOC.relative_to(ROOT)}: the rule table is out of date; run scripts/rule_table.py")
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
