"""The analysis: what reads evidence, the sessions' raw files and the authors' released data,
and turns it into tables, values and the study's findings. It never imports the testbed, so it
runs where no session can (docs/layout.md)."""
