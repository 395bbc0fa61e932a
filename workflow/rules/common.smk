# Runs before any rule: validate the configuration, locate inputs, and build target lists.
import functools
import re
import shlex
import sys
from pathlib import Path

REPO = Path(workflow.basedir)
# The package is importable here and, through PYTHONPATH, in every job (also under
# --sdm conda or on a cluster node), whether or not it was pip-installed there.
sys.path.insert(0, str(REPO / "src"))

from snakemake.settings.types import DeploymentMethod

from reallymuted import codegraph, reference
from reallymuted.analysis.attack import attack_sessions
from reallymuted.config import (
    export_package_path,
    export_script_command,
    space_out_full_collections,
    validate_config,
)
from reallymuted.policy.corpus import POLICIES, POLICIES_SCHEMA, load_corpus
from reallymuted.paths import (
    CONFIG_SCHEMA,
    EVIDENCE,
    FAILED,
    MANIFEST,
    RAW,
    analysis_dir,
    session_dir,
    stimulus_wav,
    timeline,
)
from reallymuted.study import guard_twins, matrix
from reallymuted.testbed.contract import apps_with_evidence
from reallymuted.testbed.drivers import check_apps, driver_module

export_package_path(REPO / "src")
# Before the plan is built: its full garbage collections cost seconds at scale.
space_out_full_collections()

validate_config(config, CONFIG_SCHEMA)

REFERENCE = reference.locate(config["reference"], REPO)
REFERENCE_CHECKSUMS = REPO / "workflow/resources/reference.sha256"
ANALYSIS_ENV = "../../envs/analysis.yaml"
TESTBED_ENV = "../../envs/testbed.yaml"


wildcard_constraints:
    window=r"\d+",


# Steps of a few seconds that only read small tables: under a cluster executor they run on
# the submitting host instead of waiting for a job slot; a local run is unaffected. Snakemake
# accepts local rules only from the workflow, not from a profile: the other cluster settings
# are in workflow/profiles/slurm/config.yaml.
localrules:
    reference_verify,
    classifier_tables,
    classifier_dataset_sizes,
    session_tables,
    claims,


def stage_on(name):
    """Whether a stage of the study is switched on in config.yaml."""
    return config["stages"].get(name, False)


# Where the rules' code digests are written (reallymuted.codegraph.code_digest).
CODE_DIGESTS = Path(".snakemake/reallymuted-code")


# Once per script and modules: the `session` rule asks for every job.
@functools.cache
def code_of(script, *modules):
    """The package files a rule's script runs (from the import graph; editing one reruns the
    job), plus those of ``modules`` it imports by name at run time: as one digest file that
    lists them and carries the newest one's time."""
    return codegraph.code_digest(
        REPO / "scripts" / f"{script}.py", modules, CODE_DIGESTS
    )


# The two rules with a job per session (`session`, `session_analysis`) run their script as a
# `shell:` command: Snakemake reads and resolves a `script:` file once per job while it plans,
# 4-5 s of a 10 000-session plan (docs/layout.md). The command gets what a `script:` job
# gets: the package (Snakemake drops PYTHONPATH in a conda env), and the rule's conda env's
# Python under --sdm conda (first on PATH once the env is active), otherwise this one. It
# finds both through environment variables: a command text with this clone's paths in it
# would rerun every session when the clone moves (Snakemake compares a shell rule's text for
# its `code` rerun trigger), and a rule variable would be one more recorded param.
export_script_command(
    REPO,
    (
        "python"
        if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
        else sys.executable
    ),
)


def script_command(script):
    """The shell command that runs scripts/{script}.py as a job (Snakemake formats it)."""
    return (
        'PYTHONPATH="$REALLYMUTED_REPO/src${{PYTHONPATH:+:$PYTHONPATH}}"'
        f' "$REALLYMUTED_PYTHON" "$REALLYMUTED_REPO/scripts/{script}.py"'
    )


def output_options(wildcards, output):
    """A job's named outputs as options of its script: `--name path` each."""
    return " ".join(f"--{name} {shlex.quote(path)}" for name, path in output.items())


def session_code(driver):
    """The code of one driver's sessions: the supervisor with the runner it starts, and the
    driver's own module (the other drivers' are not theirs)."""
    return code_of("session_run", driver_module(driver))


def name_pattern(names):
    """A wildcard constraint matching exactly these names (and nothing, given none)."""
    return (
        "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
        or "(?!)"
    )


# --- the study: names every rule file may use ---------------------------------------------

SESSIONS = config["sessions"]
# Fails here, before any job, if an app asks its driver for a mode it does not know.
check_apps(SESSIONS)
SESSION_MATRIX = matrix(SESSIONS)
# One session's folders, as rule patterns (reallymuted.paths spells the layout).
SESSION_DIR = session_dir("{app}", "{mode}", "{stimulus}", "{rep}")
SESSION_TABLES = analysis_dir("{app}", "{mode}", "{stimulus}", "{rep}")
MODES = [m for entry in SESSIONS["apps"].values() for m in entry["modes"]]
# The sessions that publish the telemetry collector's log: the testbed profiles' (whose
# modelled telemetry the telemetry rules decode) and the vendors' libraries' (rules/sdk.smk).
COLLECTOR_APPS = apps_with_evidence(SESSIONS, "collector.jsonl")
PROFILE_APPS = [a for a in COLLECTOR_APPS if SESSIONS["apps"][a]["driver"] == "profile"]
# (a library's sessions under the OS-level mute are the guard table's, not its own behaviour)
SDK_APPS = [
    a
    for a, e in SESSIONS["apps"].items()
    if e["driver"] in ("sdk", "sdk-preview") and not e.get("guard")
]
ATTACK_STIMULI = {
    name: spec
    for name, spec in SESSIONS["stimuli"].items()
    if (spec or {}).get("kind") == "activity"
}
# Each app of the study that runs with the OS-level mute, and its unguarded twin.
GUARD_TWINS = guard_twins(SESSIONS, {key.app for key in SESSION_MATRIX})
ATTACK_SESSIONS = attack_sessions(config)  # those whose telemetry the attack decodes
# ... and those of their twins with the OS-level mute (docs/guard.md): the attack's guarded arm
ATTACK_GUARDED_SESSIONS = attack_sessions(config, guarded=True)
# every attack app's, with and without the guard (the leakage test's)
LEAKAGE_SESSIONS = attack_sessions(config, telemetry_only=False, guarded=None)
# What a classifier window job depends on: changing any other key never retrains a model.
CLASSIFIER_WINDOW_KEYS = [
    "models",
    "seed",
    "grids",
    "validation_fraction",
    "random_validation_fraction",
    "balance_classes",
]


def reference_file(name):
    """Path of one file of the authors' released artifact (local or downloaded)."""
    return str(REFERENCE.directory / name)


def reference_files():
    """Every file of the released artifact listed in the pinned checksums."""
    return [reference_file(n) for n in reference.read_checksums(REFERENCE_CHECKSUMS)]


USERSTUDY_FIGURES = [
    "fig1_q1_why_mute",
    "fig2_q2_background_activities",
    "fig3_q3_what_mute_does",
    "fig4_q4_mic_access_believed",
    "fig5_q5_mic_access_wanted",
]


def userstudy_outputs():
    """The user-study tables and Figures 1-5."""
    tables = ["codes", "statements", "combinations", "kappa", "iuipc"]
    return [
        *expand("results/tables/userstudy_{table}.csv", table=tables),
        *expand(
            "results/figures/{figure}.{ext}",
            figure=USERSTUDY_FIGURES,
            ext=["png", "pdf"],
        ),
    ]


def claims_value_files():
    """The values files of every active stage: the computed side of the claims table."""
    stems = []
    if stage_on("reference"):
        stems += ["userstudy", "telemetry_reference", "classifier_reference"]
    if stage_on("sessions"):
        stems += ["testbed"]
    if "results/values/sdk.json" in sdk_outputs():
        stems += ["sdk"]
    if "results/values/attack.json" in attack_outputs():
        stems += ["attack"]
    stems += ["policy"]  # always: the policy stage builds offline from its corpus
    return expand("results/values/{stem}.json", stem=stems)


def classifier_outputs():
    """The classifier's tables and values, Figure 8 and the paper's confusion figures for
    the configured windows (n = 3, 5, 7, 10 are Figures 12, 13, 9, 14)."""
    numbers = {3: 12, 5: 13, 7: 9, 10: 14}
    figures = [
        f"fig{numbers[n]}_confusion_n{n}"
        for n in config["classifier"]["windows"]
        if n in numbers
    ]
    tables = ["metrics", "confusion", "dataset_sizes"]
    return [
        *expand("results/tables/classifier_{table}.csv", table=tables),
        "results/values/classifier_reference.json",
        *expand(
            "results/figures/{f}.{ext}",
            f=["fig8_gain_space", *figures],
            ext=["png", "pdf"],
        ),
    ]


def telemetry_outputs():
    """The decoded reference Webex record: its table, its problems and the values of T1."""
    return [
        "results/tables/telemetry_reference.csv",
        "results/tables/telemetry_reference_problems.csv",
        "results/values/telemetry_reference.json",
    ]


def session_outputs():
    """The raw evidence of every testbed session: its manifest, written last when complete.
    Empty when `stages.sessions` is off."""
    if not stage_on("sessions"):
        return []
    manifests = [f"{session_dir(*key)}/{MANIFEST}" for key in SESSION_MATRIX]
    if SESSIONS["replay"]:
        require_replayed_evidence(manifests)
    return manifests


def require_replayed_evidence(manifests):
    """Under `sessions.replay` the raw evidence is an input that no job makes: stop
    before any job, naming every session whose files are missing, not just the first."""
    from snakemake.exceptions import WorkflowError

    problems = []
    for manifest in manifests:
        folder = Path(manifest).parent
        names = (Path(manifest).name, *EVIDENCE)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            failed = " (failed when captured)" if (folder / FAILED).is_file() else ""
            problems.append(f"{folder}{failed}: missing {', '.join(missing)}")
    if problems:
        raise WorkflowError(
            f"sessions.replay is on, so sessions are not captured but read from {RAW}/; "
            "missing raw evidence:\n  " + "\n  ".join(problems)
        )


def session_files(name, apps=None):
    """One analysis file (e.g. ``policy.json``) of every testbed session in the matrix (of
    ``apps`` only, when given)."""
    return [
        f"{analysis_dir(*key)}/{name}"
        for key in SESSION_MATRIX
        if apps is None or key.app in apps
    ]


# What one session's analysis writes; a profile's job writes its telemetry too
# (telemetry_sessions.smk). Fresh objects per rule: Snakemake rewrites a report() flag's
# caption in place when a rule takes it.
def per_session_analysis_files():
    return dict(
        packets=f"{SESSION_TABLES}/packets.parquet",
        reads=f"{SESSION_TABLES}/mic_reads.parquet",
        states=f"{SESSION_TABLES}/states.csv",
        policy=f"{SESSION_TABLES}/policy.json",
        flows=f"{SESSION_TABLES}/flows.csv",
        png=report(
            timeline("{app}", "{mode}", "{stimulus}", "{rep}", "png"),
            caption="../report/session_timeline.rst",
            category="Testbed sessions",
            subcategory="{app}",
        ),
        pdf=timeline("{app}", "{mode}", "{stimulus}", "{rep}", "pdf"),
    )


def session_analysis_outputs():
    """The testbed's tables. Each session's timeline figure is not listed: the job that makes
    the session's tables (which these tables need) makes it, and 20 000 fewer targets took a
    10 000-session plan from 838 to 810 MB."""
    if not stage_on("sessions"):
        return []
    return [
        "results/tables/session_states.csv",
        "results/tables/mic_policy.csv",
    ]


def telemetry_session_outputs():
    """The testbed profiles' telemetry tables and values; empty without profile sessions."""
    if not stage_on("sessions") or not session_files("telemetry.csv", PROFILE_APPS):
        return []
    return [
        "results/tables/telemetry_sessions.csv",
        "results/tables/telemetry_sessions_check.csv",
        "results/values/telemetry_sessions.json",
    ]


def sdk_session_files(name):
    """One raw evidence file of every session of a vendor's library (drivers sdk, sdk-preview)."""
    return [
        f"{session_dir(*key)}/{name}" for key in SESSION_MATRIX if key.app in SDK_APPS
    ]


def sdk_outputs():
    """The vendors' libraries' tables, when their sessions are in the matrix."""
    if not stage_on("sessions") or not sdk_session_files("manifest.json"):
        return []
    return [
        "results/tables/sdk_sessions.csv",
        "results/tables/sdk_telemetry.csv",
        "results/values/sdk.json",
    ]


def guard_outputs():
    """The guarded clients beside their twins, when the study has any (docs/guard.md)."""
    if not stage_on("sessions") or not GUARD_TWINS:
        return []
    return [
        "results/tables/guard.csv",
        "results/figures/guard.png",
        "results/figures/guard.pdf",
        "results/values/guard.json",
    ]


def telemetry_compared_inputs(wildcards):
    """The decoded Webex telemetry of each source this run has (reference, model, library)."""
    inputs = {}
    if stage_on("reference"):
        inputs["reference"] = "results/tables/telemetry_reference.csv"
    if telemetry_session_outputs():
        inputs["profile"] = "results/tables/telemetry_sessions.csv"
    if sdk_outputs():
        inputs["sdk"] = "results/tables/sdk_telemetry.csv"
    return inputs


def telemetry_compared_outputs():
    """The side-by-side table, when a run has Webex's library and one more source."""
    sources = telemetry_compared_inputs(None)
    if "sdk" not in sources or len(sources) < 2:
        return []
    return ["results/tables/telemetry_muted_compared.csv"]


def apps_outputs():
    """The Table 2 analogue always; the per-app headline once there are testbed sessions."""
    targets = ["results/tables/apps_platforms.csv"]
    if stage_on("sessions"):
        targets += [
            "results/tables/apps_headline.csv",
            "results/figures/apps_side_by_side.png",
            "results/figures/apps_side_by_side.pdf",
        ]
    return targets


def attack_outputs():
    """The attack on captured telemetry: the decoded intervals, Figures 7 and 8 analogues, the
    classifier's tables and figures and its values (when the attack's telemetry apps are in
    the matrix), and the leakage test on the muted traffic of every attack app. Empty when
    `stages.attack` is off or `sessions.select` leaves the attack's apps out."""
    targets = []
    if ATTACK_SESSIONS:
        figures = ["fig7_gain_vs_power", "fig8_gain_space_captured"]
        figures += ["attack_confusion", "attack_learning_curve"]
        tables = ["telemetry", "classifier_metrics", "confusion", "learning_curve"]
        targets += expand("results/tables/attack_{table}.csv", table=tables)
        targets += ["results/values/attack.json"]
        targets += expand("results/figures/{f}.{ext}", f=figures, ext=["png", "pdf"])
    if LEAKAGE_SESSIONS:
        targets += ["results/tables/leakage.csv"]
        targets += expand("results/figures/leakage.{ext}", ext=["png", "pdf"])
    # the attack with and without the OS-level mute, side by side
    if ATTACK_SESSIONS and ATTACK_GUARDED_SESSIONS:
        targets += ["results/tables/attack_guard.csv"]
        targets += ["results/values/attack_guard.json"]
        targets += expand("results/figures/attack_guard.{ext}", ext=["png", "pdf"])
    return targets


def policy_fetch_outputs():
    """Every listed document's current text and its record, when policy.fetch is on."""
    if not config["policy"]["fetch"]:
        return []
    corpus = load_corpus(POLICIES, POLICIES_SCHEMA)
    return [
        f"results/policies/{app}/{doc.id}.{ext}"
        for app in corpus.apps
        for doc in corpus.documents[app]
        for ext in ("raw", "txt", "json")
    ]


def policy_behaviour_inputs(wildcards):
    """What this run measured (the ten apps' headline, the released Webex record) and,
    with policy.fetch on, the documents' current texts."""
    inputs = {}
    if "results/tables/apps_headline.csv" in apps_outputs():
        inputs["headline"] = "results/tables/apps_headline.csv"
    if stage_on("reference"):
        inputs["telemetry"] = "results/tables/telemetry_reference.csv"
    fetched = [path for path in policy_fetch_outputs() if path.endswith(".txt")]
    if fetched:
        inputs["fetched"] = fetched
    return inputs


def policy_outputs():
    """Each app's policy beside what was measured (docs/policy.md): always, offline
    from the corpus; with policy.fetch on, the documents' current texts too."""
    targets = ["results/tables/policy_behaviour.csv", "results/values/policy.json"]
    targets += expand("results/figures/policy_behaviour.{ext}", ext=["png", "pdf"])
    return targets + policy_fetch_outputs()


def get_final_output():
    """Everything `snakemake` builds by default, stage by stage."""
    targets = []
    if stage_on("reference"):
        targets += userstudy_outputs()
        targets += telemetry_outputs()
        targets += classifier_outputs()
    targets += session_outputs()
    targets += session_analysis_outputs()
    targets += telemetry_session_outputs()
    targets += sdk_outputs()
    targets += guard_outputs()
    targets += telemetry_compared_outputs()
    targets += apps_outputs()
    targets += attack_outputs()
    targets += policy_outputs()
    targets += ["results/tables/claims.csv", "results/tables/claims.md"]
    return targets
