"""Rule session_analysis: one session's evidence as tables (packets, microphone reads), its
per-state statistics, policy labels and flows, and its timeline figure. Rule
profile_session_analysis: the same, then the profile's telemetry matched to its collector."""

from pathlib import Path

from reallymuted.analysis import extract, micpolicy
from reallymuted.figures import sessions as session_figures
from reallymuted.io import log_to_file

log_to_file(snakemake.log[0])
out = snakemake.output
session = Path(snakemake.input.manifest).parent
extract.extract_session(session, out.packets, out.reads)
tables = {name: out[name] for name in ("states", "policy", "flows")}
micpolicy.write_session_analysis(session, out.packets, out.reads, tables)
session_figures.timeline_from_files(session, out.packets, out.reads, [out.png, out.pdf])
if hasattr(out, "telemetry"):  # a Namedlist: `in` would search its paths
    # imported here: only profile sessions need pyshark's dissection (the rule names this
    # module in its code input, telemetry_sessions.smk)
    from reallymuted.analysis.telemetry import sessions as telemetry_sessions

    telemetry_sessions.write_session(session, out.packets, out.telemetry, out.telemetry_check)
