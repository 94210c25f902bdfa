"""`cofee-predict MODEL [--text T | --input FILE] [--output FILE]`: tag raw text, one sentence a line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from cofee.utils.errors import user_errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cofee-predict", description=__doc__)
    parser.add_argument("model", help="an exported model folder (outputs/<run>/model)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="one sentence to tag")
    source.add_argument("--input", help="a UTF-8 file, one sentence (or document) per line; - for stdin")
    parser.add_argument("--output", help="write JSON lines here (atomically) instead of printing")
    parser.add_argument(
        "--words",
        choices=["whitespace", "chars", "tokenizer"],
        default="whitespace",
        help="word units: whitespace chunks (as gold tokens), characters, or the tokenizer's "
        "words (reproduces transformers' pipeline)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="drop I- tags that follow O (as the evaluation)"
    )
    args = parser.parse_args(argv)
    with user_errors("cofee-predict"):
        from cofee.pipeline.predict import Tagger
        from cofee.utils.errors import InputFileError
        from cofee.utils.io import atomic_write_text

        if args.text is not None:
            texts = [args.text]
        elif args.input == "-":
            texts = sys.stdin.read().splitlines()
        else:
            try:
                with open(args.input, encoding="utf-8") as handle:
                    texts = handle.read().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputFileError(args.input, f"cannot read ({exc.__class__.__name__}: {exc})") from None
        spans = Tagger(args.model)(texts, words=args.words, strict=args.strict)
        lines = [
            json.dumps({"text": t, "spans": [asdict(s) for s in found]}, ensure_ascii=False)
            for t, found in zip(texts, spans)
        ]
        if args.output:
            atomic_write_text(args.output, "\n".join(lines) + "\n")
        else:
            print("\n".join(lines))


if __name__ == "__main__":
    main()
