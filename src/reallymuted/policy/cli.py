"""``reallymuted policy``: what a privacy policy text says, by the seed review's rubric
(docs/policy.md). Registered with the other command groups by :mod:`reallymuted.cli`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2  # as reallymuted.cli's: 2 is also an unreadable input


def add_policy_commands(subparsers: argparse._SubParsersAction) -> None:
    policy = subparsers.add_parser(
        "policy",
        help="privacy policy texts against the seed review's rubric",
        description="Read privacy policy texts the way the study's policy stage does.",
    )
    commands = policy.add_subparsers(dest="command", required=True, metavar="COMMAND")
    review = commands.add_parser(
        "review",
        help="map a policy text to the rubric, sentence by sentence, with the evidence",
        description=(
            "Map each policy text (UTF-8 plain text; convert a PDF or an HTML page first) to the "
            "ten rubric categories of the seed review, sentence by sentence, printing the "
            "sentences that matched each category; the categories the text never addresses; "
            "the retention periods it states; every mention of microphone, audio, mute, "
            "telemetry or diagnostics; and the words of a video-conferencing policy it never "
            "uses. The mapping is rule-based (reallymuted.policy.review.RULES): read the "
            "evidence, not just the category. Exit status 0: every file reviewed; 2: a file "
            "was missing, empty, binary or not UTF-8 (the others are still reviewed)."
        ),
    )
    review.add_argument("files", nargs="+", metavar="FILE", help="a policy text")
    review.add_argument(
        "--json", type=Path, metavar="OUT.json", help="also write every review as JSON here"
    )
    review.set_defaults(handler=policy_review)


def policy_review(args: argparse.Namespace) -> int:
    from reallymuted.config import ConfigError
    from reallymuted.policy.corpus import load_corpus
    from reallymuted.policy.review import ReviewError, format_review, review_file

    try:
        rubric = load_corpus().rubric  # the seed's headings, to print beside the keys
    except (ConfigError, OSError):
        rubric = {}
    reviews, failed = [], 0
    for name in args.files:
        try:
            review = review_file(name)
        except (ReviewError, OSError) as exc:
            print(f"reallymuted: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        reviews.append(review)
        print(format_review(review, rubric))
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_dict() for r in reviews], indent=2) + "\n")
    return EXIT_USAGE if failed else EXIT_OK
