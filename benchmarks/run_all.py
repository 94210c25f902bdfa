"""`make bench`: run every benchmark; each writes benchmarks/results/<name>.json."""

from __future__ import annotations

import importlib
import json
import sys

BENCHMARKS = [
    "benchmarks.bench_cli_startup",
    "benchmarks.bench_build_anchors",
    "benchmarks.bench_esi",
    "benchmarks.bench_clustering",
    "benchmarks.bench_gazetteer",
    "benchmarks.bench_fet",
    "benchmarks.bench_data_setup",
    "benchmarks.bench_study_workers",
    "benchmarks.bench_curriculum_gpu",  # skipped, with the reason recorded, without a GPU
]


def main(names: list[str]) -> int:
    failed = []
    for name in names or BENCHMARKS:
        print(f"== {name}", flush=True)
        try:
            result = importlib.import_module(name).run()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
            continue
        for fig in result["figures"]:
            print(json.dumps(fig))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
