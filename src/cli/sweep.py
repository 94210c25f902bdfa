"""`cofee-sweep`: run a W&B sweep YAML here, offline, with W&B's open-source `sweeps` library.

    cofee-sweep conf/sweep/finetune.yaml --count 8      # or: make sweep SWEEP=... COUNT=8

The same YAML works online, unchanged: `wandb sweep conf/sweep/finetune.yaml`, then `wandb agent <id>`.
Each run is a cofee-finetune process in its own folder, runs/<n>/ (`paths.output_dir`), and its metric
is read from the results.json it writes there; a run that fails or writes none is a failed row with
its reason. Writes sweeps/<name>/results.csv (sorted by the sweep's metric) and state.json.
"""

from __future__ import annotations

import argparse
import sys

from cofee.utils.errors import user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cofee-sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep YAML in W&B's format, e.g. conf/sweep/finetune.yaml")
    parser.add_argument("--count", type=int, default=None, help="runs to start (default: the whole grid)")
    parser.add_argument("--out", default="sweeps", help="where sweeps/<name>/ goes (default: sweeps)")
    parser.add_argument("--name", default=None, help="the sweep's name (default: `name:` or the file name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random and bayes proposals")
    parser.add_argument("--fresh", action="store_true", help="forget earlier runs of this sweep")
    parser.add_argument("--check", action="store_true", help="check the YAML against the config, run nothing")
    parser.add_argument("--run-timeout", type=float, default=None, help="seconds before a run is stopped")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with user_errors("cofee-sweep"):
        from cofee.experiments.sweep import (
            best_command,
            check_parameters,
            load_sweep,
            markdown_table,
            run_sweep,
        )

        sweep = load_sweep(args.sweep, args.name)
        if args.check:
            check_parameters(sweep)
            print(f"cofee-sweep: {args.sweep}: {sweep.config['method']} over {', '.join(sweep.params)}: ok")
            return
        outcome = run_sweep(
            sweep,
            count=args.count,
            out_root=args.out,
            seed=args.seed,
            fresh=args.fresh,
            timeout=args.run_timeout,
            echo=lambda line: print(line, flush=True),
        )
        print()
        print(markdown_table(sweep, outcome.records))
        print(f"\nresults: {outcome.sweep_dir / 'results.csv'}")
        best = best_command(sweep, outcome.records)
        print(f"best {best}" if best else f"no run reported {sweep.metric}")
        if best is None:
            sys.exit(1)


if __name__ == "__main__":
    main()
