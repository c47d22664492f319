"""The command line as users type it: Hydra's flags on either side of the overrides,
sweeps refused at once, and every refusal of Hydra's as one ``error:`` line."""

from __future__ import annotations

import subprocess
from importlib.resources import files
from pathlib import Path

import pytest
from conftest import Env, write_records
from hydra import compose, initialize_config_dir
from test_cli_errors import assert_nothing_created

from buttermilk.errors import UsageError
from buttermilk.runner.cli import say_error
from buttermilk.runner.command_line import hydra_argv, hydra_error_line, hydra_start_error
from buttermilk.runner.sweeps import EXAMPLE


def test_hydra_flags_move_in_front_of_the_overrides_wherever_they_were_typed() -> None:
    assert hydra_argv(["ui=batch", "--config-dir", "myconf", "flow=x"]) == [
        "--config-dir",
        "myconf",
        "ui=batch",
        "flow=x",
    ]
    assert hydra_argv(["ui=batch", "flow=x", "-cd=myconf", "--cfg", "job"]) == [
        "--cfg",
        "job",
        "--config-dir",
        "myconf",
        "ui=batch",
        "flow=x",
    ]
    assert hydra_argv(["a=1", "--config-d", "c", "b=2"]) == ["--config-dir", "c", "a=1", "b=2"]
    assert hydra_argv(["ui=batch", "~queue", "+x=1", "++y=2"]) == [
        "ui=batch",
        "~queue",
        "+x=1",
        "++y=2",
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["ui=batch", "--multirun", "flow=a,b"],
            "--multirun sweeps are not supported: compare flows with a batch of each, or "
            f"values within one flow in one batch with {EXAMPLE}",
        ),
        (
            ["-m", "batch.seed=1,2"],
            f"--multirun sweeps are not supported: compare values in one batch with {EXAMPLE}",
        ),
        (
            ["hydra.mode=MULTIRUN", "+batch.parameters.tone=choice(calm,harsh)"],
            "--multirun sweeps are not supported: compare values in one batch with "
            "'batch.variants={tone: [calm, harsh]}'",
        ),
        (["ui=batch", "--colour", "flow=a"], "unknown flag --colour: Hydra's flags are"),
        (["ui=batch", "--config-dir"], "argument --config-dir/-cd: expected one argument"),
        (
            ["queue=null"],
            "queue=null is not allowed: queue takes the name of a config: local, pubsub",
        ),
        (["store=5"], "store=5 is not allowed: store takes the name of a config: postgres, sqlite"),
        (["run=true"], "run=true is not allowed: run takes the name of a config: api, batch"),
        (["+queue=3.5"], "queue=3.5 is not allowed: queue takes the name of a config: local"),
        (["hydra/launcher=1"], "hydra/launcher=1 is not allowed: hydra/launcher takes the name"),
        (["hydra=5"], "hydra=5 is not allowed: hydra is Hydra's own section"),
    ],
)
def test_a_command_line_hydra_cannot_take_is_refused_before_hydra_runs(
    argv: list[str], expected: str
) -> None:
    with pytest.raises(UsageError) as caught:
        hydra_argv(argv)

    assert str(caught.value).startswith(expected), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.backends("local")
def test_the_readmes_config_dir_after_ui_batch_creates_a_batch_of_the_users_flow(
    env: Env, tmp_path: Path
) -> None:
    ids = write_records(env.data / "records.jsonl", 2)
    flows = tmp_path / "myconf" / "flows"
    flows.mkdir(parents=True)
    (flows / "mine.yaml").write_text(
        "data: {records: {type: file, path: '${oc.env:BUTTERMILK_DATA}/records.jsonl'}}\n"
        "agents: [{name: noop, _target_: buttermilk.agents.testing.noop}]\n"
    )

    # env.args puts ui=batch and other overrides first: the flag comes after them.
    created = env.ok("--config-dir", str(tmp_path / "myconf"), "flow=mine", "batch.format=json")

    batch = created.json()
    assert (batch["flow"], batch["total"]) == ("mine", len(ids))


@pytest.mark.backends("local")
def test_multirun_is_refused_at_once_and_leaves_no_multirun_folder(
    env: Env, tmp_path: Path
) -> None:
    write_records(env.data / "records.jsonl", 2)
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    proc = subprocess.run(
        env.args("--multirun", "flow=t_work,sentiment"),
        env=env.environ,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --multirun sweeps are not supported: compare flows with a batch of each, or "
        f"values within one flow in one batch with {EXAMPLE} (an axis is AGENT.OPTION or a "
        "flow parameter)"
    ]
    assert list(workdir.iterdir()) == []  # no multirun/ (or outputs/) folder
    assert_nothing_created(env)


HYDRA_REFUSALS = [
    pytest.param(
        ["flow=t_work", "batch.concurency=5"],
        "error: batch.concurency is not a known option (did you mean batch.concurrency?)",
        id="typo",
    ),
    pytest.param(
        ["flow=t_work", "concurrency=5"],
        "error: concurrency is not a known option (did you mean batch.concurrency?)",
        id="section-left-out",
    ),
    pytest.param(
        ["flow=t_work", "queue=kafka"],
        "error: queue=kafka is not allowed: known options are local, pubsub",
        id="unknown-group-option",
    ),
    pytest.param(
        ["flow=t_work", "+batch.parameters.x=[1,2"],
        "error: cannot read the override '+batch.parameters.x=[1,2': no viable alternative",
        id="unparseable-override",
    ),
    pytest.param(
        ["flow=t_work,sentiment"],
        "error: flow=t_work,sentiment is a sweep, and sweeps are not supported: compare flows "
        "with a batch of each",
        id="sweep-without-multirun",
    ),
    pytest.param(
        ["flow=t_work", "+batch.parameters.sleep=0.1,0.2"],
        "error: +batch.parameters.sleep=0.1,0.2 is a sweep, and sweeps are not supported: "
        "compare values in one batch with 'batch.variants={sleep: [0.1, 0.2]}'; for a list "
        "write +batch.parameters.sleep=[0.1,0.2]",
        id="parameter-sweep-as-variants",
    ),
    pytest.param(
        ["flow=t_work", "batch.seed=choice(1,2)"],
        "error: batch.seed=choice(1,2) is a sweep, and sweeps are not supported: compare "
        f"values in one batch with {EXAMPLE} (an axis is AGENT.OPTION or a flow parameter)",
        id="choice-sweep",
    ),
    pytest.param(
        ["flow=t_work", "+batch.retry_dely=5"],
        "error: batch.retry_dely is not a known option (did you mean batch.retry_delay?)",
        id="added-unknown-key",
    ),
    pytest.param(
        ["flow=t_work", "batch=5"],
        "error: batch=5 is not allowed: batch is a section of options, set each on its own "
        "(e.g. batch.concurrency=...)",
        id="a-section-given-one-value",
    ),
    pytest.param(
        ["flow=t_work", "queue=null"],
        "error: queue=null is not allowed: queue takes the name of a config: local, pubsub",
        id="a-group-given-null",
    ),
    pytest.param(
        ["flow=t_work", "store=5"],
        "error: store=5 is not allowed: store takes the name of a config: postgres, sqlite",
        id="a-group-given-a-number",
    ),
    pytest.param(
        ["flow=t_work", "hydra.run.dir=/proc/x"],
        "error: hydra.run.dir=/proc/x is not allowed: cannot make the folder /proc/x (No such "
        "file or directory); Buttermilk writes nothing there, so it may be left unset",
        id="a-run-dir-that-cannot-be-made",
    ),
]


@pytest.mark.backends("local")
@pytest.mark.parametrize(("args", "expected"), HYDRA_REFUSALS)
def test_a_command_line_hydra_refuses_gives_one_error_line_and_exit_2(
    env: Env, args: list[str], expected: str
) -> None:
    write_records(env.data / "records.jsonl", 2)

    result = env.cli(*args)

    assert result.returncode == 2, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), str(result)
    assert_nothing_created(env)


@pytest.mark.backends("local")
def test_a_user_who_asks_hydra_for_full_errors_gets_them(env: Env) -> None:
    env.extra["HYDRA_FULL_ERROR"] = "1"

    result = env.cli("batch.concurency=5")

    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ConfigCompositionException" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: batch.concurency is not")


NOOP_FLOW = (
    "data: {records: {type: file, path: '${oc.env:BUTTERMILK_DATA}/records.jsonl'}}\n"
    "agents: [{name: noop, _target_: buttermilk.agents.testing.noop}]\n"
)
BUNDLED_FLOWS = Path(str(files("buttermilk.conf"))) / "flows"
# (flow name, its file's text, the one error line); {mine} is the user's flows folder.
BAD_FLOW_FILES = [
    pytest.param(
        "sentiment",
        NOOP_FLOW,
        f"error: flow 'sentiment' is defined twice, in {BUNDLED_FLOWS}/sentiment.yaml and in "
        "{mine}/sentiment.yaml: rename one of them (a flow's name is its file name)",
        id="same-name-as-a-bundled-flow",
    ),
    pytest.param(
        "listed",
        "- name: a\n- name: b\n",
        "error: flow 'listed': {mine}/listed.yaml holds a list, but a flow file must be a "
        "mapping (description:, data:, agents:, ...)",
        id="a-list",
    ),
    pytest.param(
        "scalar",
        "42\n",
        "error: flow 'scalar': {mine}/scalar.yaml holds a number, but a flow file must be a "
        "mapping (description:, data:, agents:, ...)",
        id="a-number",
    ),
    pytest.param(
        "broken",
        "description: x\nagents:\n  - name: a\n    _target_: [unclosed\n",
        "error: flow 'broken': {mine}/broken.yaml:5:1: expected ',' or ']', but got "
        "'<stream end>' (while parsing a flow sequence at line 4, column 15)",
        id="yaml-syntax-error",
    ),
    pytest.param(
        "tabbed",
        "description: x\n\tagents: []\n",
        "error: flow 'tabbed': {mine}/tabbed.yaml:2:1: found character '\\t' that cannot "
        "start any token",
        id="yaml-tab",
    ),
]


@pytest.mark.backends("local")
@pytest.mark.parametrize(("name", "text", "expected"), BAD_FLOW_FILES)
def test_a_flow_file_that_cannot_be_a_flow_is_one_line_naming_the_file(
    env: Env, tmp_path: Path, name: str, text: str, expected: str
) -> None:
    write_records(env.data / "records.jsonl", 2)
    mine = tmp_path / "myconf" / "flows"
    mine.mkdir(parents=True)
    (mine / f"{name}.yaml").write_text(text)

    result = env.cli("--config-dir", str(tmp_path / "myconf"), f"flow={name}")

    assert result.returncode == 2, str(result)
    assert result.stderr.strip().splitlines()[-1] == expected.format(mine=mine), str(result)
    assert "Traceback" not in result.stderr
    assert_nothing_created(env)


@pytest.mark.backends("local")
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            ["--config-dir", "{tmp}/nothere"],
            "--config-dir {tmp}/nothere: the folder does not exist",
        ),
        (["--config-dir", "{tmp}/a-file"], "--config-dir {tmp}/a-file: is not a folder"),
        (
            ["hydra.searchpath=[file://{tmp}/nothere]"],
            "hydra.searchpath entry file://{tmp}/nothere: the folder {tmp}/nothere does not exist",
        ),
        (
            ["hydra.searchpath=[pkg://no_such_package_here]"],
            "hydra.searchpath entry pkg://no_such_package_here: there is no installed Python "
            "package 'no_such_package_here'",
        ),
    ],
    ids=["config-dir", "config-dir-a-file", "searchpath-folder", "searchpath-package"],
)
def test_a_config_folder_that_does_not_exist_is_named_not_taken_for_an_unknown_flow(
    env: Env, tmp_path: Path, given: list[str], expected: str
) -> None:
    (tmp_path / "a-file").write_text("")

    result = env.cli(*(arg.format(tmp=tmp_path) for arg in given), "flow=mine")

    assert result.returncode == 2, str(result)
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {expected.format(tmp=tmp_path)}"], str(result)


def test_a_yaml_syntax_error_in_any_config_file_is_one_line_with_file_line_and_column(
    tmp_path: Path,
) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - local: local\n  - _self_\n")
    (tmp_path / "local" / "local.yaml").write_text("# @package _global_\nqueue: [unclosed\n")

    with (
        initialize_config_dir(str(tmp_path), version_base=None),
        pytest.raises(Exception) as caught,
    ):
        compose("config")

    assert hydra_error_line(caught.value) == (
        f"{tmp_path}/local/local.yaml:3:1: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at line 2, column 8)"
    )


def test_any_other_failure_before_the_command_runs_is_one_line_naming_the_hydra_overrides() -> None:
    # What Hydra raises for hydra.verbose=5: a bare assertion, before the command runs.
    assert hydra_start_error(AssertionError(), ["ui=batch", "hydra.verbose=5", "flow=x"]) == (
        "Hydra cannot start with hydra.verbose=5: AssertionError"
    )
    assert hydra_start_error(RuntimeError("boom\nmore"), ["flow=x"]) == "Hydra cannot start: boom"


@pytest.mark.backends("local")
def test_a_users_queue_config_with_the_name_of_a_bundled_one_is_refused_naming_both(
    env: Env, tmp_path: Path
) -> None:
    mine = tmp_path / "myconf" / "queue"
    mine.mkdir(parents=True)
    (mine / "local.yaml").write_text(f"type: local\npath: {tmp_path}/elsewhere.db\n")
    bundled = Path(str(files("buttermilk.conf"))) / "queue" / "local.yaml"

    result = env.cli("--config-dir", str(tmp_path / "myconf"), "batch.command=list")

    assert result.returncode == 2, str(result)
    assert result.stderr.strip().splitlines() == [
        f"error: queue=local is defined twice, in {bundled} and in {mine}/local.yaml: rename or "
        "remove one of them"
    ]


def test_an_error_message_over_several_lines_is_said_in_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    say_error(UsageError("cannot load x.yaml:\n  in line 3\n\nexpected ']'\n"))
    say_error(UsageError(""))

    assert capsys.readouterr().err.splitlines() == [
        "error: cannot load x.yaml: in line 3 expected ']'",
        "error: UsageError",
    ]
