"""Rule session: run one testbed session (needs root) and publish its raw evidence.

Run by the rule as a command, not through `script:` (workflow/rules/common.smk says why)."""

import argparse
import json
from pathlib import Path

from reallymuted.io import log_to_file
from reallymuted.testbed.supervisor import run_for_rule

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--log", required=True, help="the job's log file")
parser.add_argument("--app", required=True)
parser.add_argument("--mode", required=True)
parser.add_argument("--stimulus", required=True, help="the stimulus's name")
parser.add_argument("--rep", required=True, type=int)
parser.add_argument("--stimulus-wav", required=True, help="the WAV file the session plays")
parser.add_argument("--manifest", required=True, type=Path, help="in the session's folder")
parser.add_argument("--settings", required=True, type=json.loads, help="the app's, as JSON")
args = parser.parse_args()

log_to_file(args.log)
run_for_rule(
    args.settings,
    args.app,
    args.mode,
    args.stimulus,
    args.rep,
    args.stimulus_wav,
    args.manifest.parent,
)
