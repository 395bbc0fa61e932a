"""The testbed: what records sessions. It runs as root and writes raw evidence (docs/evidence.md):
the supervisor and the two runners, the virtual microphone, the capture, the tracer, the network
namespaces and the drivers of the clients. The analysis never imports it (docs/layout.md)."""
