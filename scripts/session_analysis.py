"""Rule session_analysis: one session's evidence as tables (packets, microphone reads), its
per-state statistics, policy labels and flows, and its timeline figure. Rule
profile_session_analysis: the same, then the profile's telemetry matched to its collector.

Run by the rule as a command, not through `script:` (workflow/rules/common.smk says why): each
option after --manifest is one of the rule's named outputs."""

import argparse
from pathlib import Path

from reallymuted.analysis import extract, micpolicy
from reallymuted.figures import sessions as session_figures
from reallymuted.io import log_to_file

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--log", required=True, help="the job's log file")
parser.add_argument("--manifest", required=True, type=Path, help="in the session's folder")
for name in ("packets", "reads", "states", "policy", "flows", "png", "pdf"):
    parser.add_argument(f"--{name}", required=True)
# a profile's session only
parser.add_argument("--telemetry")
parser.add_argument("--telemetry_check")
out = parser.parse_args()

log_to_file(out.log)
session = out.manifest.parent
extract.extract_session(session, out.packets, out.reads)
tables = {name: getattr(out, name) for name in ("states", "policy", "flows")}
micpolicy.write_session_analysis(session, out.packets, out.reads, tables)
session_figures.timeline_from_files(session, out.packets, out.reads, [out.png, out.pdf])
if out.telemetry:
    # imported here: only profile sessions need pyshark's dissection (the rule names this
    # module in its code input, telemetry_sessions.smk)
    from reallymuted.analysis.telemetry import sessions as telemetry_sessions

    telemetry_sessions.write_session(session, out.packets, out.telemetry, out.telemetry_check)
