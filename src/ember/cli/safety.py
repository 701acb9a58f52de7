"""``ember redact``: personal data found and masked in a JSONL (or plain text) file, with a report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = """Find and mask personal data in a data file: e-mail addresses, phone numbers, card numbers
(Luhn-checked), IBANs (mod-97-checked), IP addresses, and with --ner spacy person names. A .jsonl
file is read record by record and every string (or only --field keys) is redacted; any other file
is read as plain text, line by line. The report counts what was found per kind.

examples:
  ember redact data.jsonl -o clean.jsonl
  ember redact data.jsonl -o clean.jsonl --field text --report report.json
  ember redact notes.txt -o notes.clean.txt --ner spacy
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "redact", help="find and mask personal data in a data file", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("path", help="a .jsonl file (one JSON record per line) or a text file")
    p.add_argument("-o", "--out", required=True, help="where the redacted file goes")
    p.add_argument(
        "--field", action="append", default=[], metavar="KEY", help="only redact these keys (repeatable)"
    )
    p.add_argument("--ner", choices=["spacy"], help="also find person names with a named-entity model")
    p.add_argument("--report", metavar="JSON", help="also write the report here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.cli import UserError
    from ember.responsible.pii import NerUnavailableError, RedactionReport, redact_record

    source, out = Path(args.path), Path(args.out)
    if not source.is_file():
        raise FileNotFoundError(f"no such file: {source}")
    if source.resolve() == out.resolve():
        raise UserError("-o must name a new file, not the input (the input is kept as it is)")
    report = RedactionReport()
    jsonl = source.suffix == ".jsonl"
    fields = set(args.field) or None
    lines_out = []
    try:
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if jsonl and not line.strip():
                continue
            try:
                record = json.loads(line) if jsonl else line
            except json.JSONDecodeError as e:
                raise UserError(
                    f"{source} line {number} is not JSON ({e.msg}); a .jsonl file holds one record per line"
                ) from None
            before = report.counts.total()
            clean = redact_record(record, report, fields=fields, ner=args.ner)
            report.records += 1
            report.changed += report.counts.total() > before
            lines_out.append(json.dumps(clean, ensure_ascii=False) if jsonl else clean)
    except NerUnavailableError as e:
        raise UserError(str(e)) from None
    out.write_text("\n".join(lines_out) + "\n")
    summary = report.to_dict()
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=1))
    found = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "nothing"
    print(f"redacted {report.changed} of {report.records} records: {found}; wrote {out}", file=sys.stderr)
    return 0
