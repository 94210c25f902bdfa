"""Render benchmarks/results/*.json as the table of benchmarks/README.md (between the bench markers)."""

from __future__ import annotations

import json
import sys

from benchmarks.common import RESULTS
from cofee.utils.errors import user_errors
from cofee.utils.io import replace_marked_block


def table() -> str:
    lines = [
        "| benchmark | figure | value | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        for f in result["figures"]:
            lines.append(
                f"| {path.stem} | {f['name']} | {f['value']:g} {f['unit']} | {f['baseline']:g} | "
                f"{f['ratio']:.2f} | {'≤' if f.get('lower_is_better') else '≥'} {f['target']:g} | "
                f"{'yes' if f['met'] else '**no**'} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    with user_errors("benchmarks.report"):
        body = table()
        print(body)
        replace_marked_block(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/README.md", "bench", body)
