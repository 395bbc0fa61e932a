# Raw session evidence -> tidy tables: packets.parquet (one tshark -T fields pass) and
# mic_reads.parquet (both microphone witnesses), per session.


rule extract_session:
    input:
        manifest=f"{SESSION_DIR}/manifest.json",
        events=f"{SESSION_DIR}/events.jsonl",
        traffic=f"{SESSION_DIR}/traffic.pcapng",
        mic_trace=f"{SESSION_DIR}/mic_trace.jsonl",
        code=code_of("extract_session"),
    output:
        packets=f"{SESSION_TABLES}/packets.parquet",
        reads=f"{SESSION_TABLES}/mic_reads.parquet",
    log:
        "logs/extract/{app}/{mode}-{stimulus}/rep{rep}.log",
    conda:
        TESTBED_ENV
    script:
        "../../scripts/extract_session.py"
