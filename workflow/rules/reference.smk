# The authors' released artifact: downloaded if it is not beside the project, always verified.


if not REFERENCE.local:

    # On a cluster, compute nodes often have no internet: the submitting host downloads.
    localrules:
        reference_download,

    # Runs only when some file is missing; Snakemake has made the output folders by then,
    # so reference.download fetches all files into staging and moves them in when all match.
    rule reference_download:
        output:
            reference_files(),
        log:
            "logs/reference/download.log",
        conda:
            ANALYSIS_ENV
        params:
            reference=config["reference"],
            checksums=str(REFERENCE_CHECKSUMS),
            target=str(REFERENCE.directory),
        script:
            "../../scripts/reference_download.py"


rule reference_verify:
    input:
        data=reference_files(),
        checksums=REFERENCE_CHECKSUMS,
        code=code_of("reference_verify"),
    output:
        "results/reference/verified.csv",
    log:
        "logs/reference/verify.log",
    conda:
        ANALYSIS_ENV
    script:
        "../../scripts/reference_verify.py"
