"""Ports of Linux's ephemeral range (32768-60999) on which tshark 4.0 hands a packet to a
dissector that takes any payload, whatever it holds.

A client the kernel gives one of these ports has its HTTP, RTP or STUN named after that
protocol, by tshark and by the native reader alike (a CI run's audit: a page's POST from port
57000 was IRC). The native reader follows tshark there (analysis.pcapclassify); the testbed's
namespaces reserve these ports, so that no session's client is given one (testbed.netns). The
range's other registered ports belong to dissectors that refuse what is not theirs:
tests/test_pcapread.py sends from every registered port of the range to check both lists.
"""

from __future__ import annotations

TCP_CLAIMING_PORTS = {34980: "ecatf", 44321: "pcp", 44322: "pmproxy", 44818: "enip"}
TCP_CLAIMING_PORTS |= {48049: "cbsp", 48898: "ams", 57000: "irc"}
UDP_CLAIMING_PORTS = {34962: "pn_rt", 34980: "ecatf", 37008: "tzsp", 41170: "manolito"}
UDP_CLAIMING_PORTS |= {44818: "enip", 47000: "hcrt", 54328: "elasticsearch"}
