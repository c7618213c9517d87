"""`tuitune train --remote`: a job on a real local stand-in of OpenAI's fine-tuning API (tests/support/
finetune_service.py), end to end through the real CLI, then every error the issue lists, Stop/cancel and
re-attaching a job nobody follows."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, one_clear_error, run_cli
from tests.support.finetune_service import BASE_ANSWER, TUNED_ANSWER, FineTuneService
from tuitune.remote_training.rules import check_for_service
from tuitune.training.data import check_dataset, example_tokens, load_examples

KEY = "sk-tuitune-remote-0123456789-SECRET"
DATA = REPO / "data" / "tuitune-identity.jsonl"
HELDOUT = REPO / "data" / "tuitune-heldout.jsonl"


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUITUNE_REMOTE_POLL_S", "0.05")
    monkeypatch.setenv("FT_KEY", KEY)


@pytest.fixture
def service(fast_polls) -> FineTuneService:
    with FineTuneService(key=KEY) as running:
        result = run_cli("endpoint", "add", "svc-base", "--base-url", running.base_url, "--model", "stub-base",
                         "--api-key-env", "FT_KEY")  # fmt: skip
        assert result.returncode == 0, result.stderr
        yield running


def train(name: str, *extra: str, data: Path = DATA, timeout: float = 120):
    return run_cli("train", "--remote", "svc-base", "--base", "stub-base", "--data", str(data), "--name", name,
                   *extra, timeout=timeout)  # fmt: skip


def run_files(data_dir: Path, name: str) -> dict[str, str]:
    folder = data_dir / "runs" / name
    return {path.name: path.read_text() for path in folder.iterdir() if path.is_file()}


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text and KEY[:12] not in text


# -- the whole road -------------------------------------------------------------------------------
def test_check_upload_job_curve_success_then_the_finetune_answers_beside_its_base(service, tuitune_dirs):
    result = train("lab", "--val", str(HELDOUT), "--epochs", "2", "--suffix", "demo", "--lr-multiplier", "1.5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "billed tokens ≈" in out and "uploading tuitune-identity.jsonl: 100%" in out
    assert "step 12/12" in out and "added to the catalog as 'lab'" in out
    # What reached the service: both files as multipart uploads, then the job with its hyperparameters.
    [training, validation] = service.uploaded()
    assert training.data == DATA.read_bytes() and validation.data == HELDOUT.read_bytes()
    create = next(r for r in service.requests if r.method == "POST" and r.path.endswith("/fine_tuning/jobs"))
    assert create.body["model"] == "stub-base" and create.body["suffix"] == "demo"
    assert create.body["method"]["supervised"]["hyperparameters"] == {"n_epochs": 2, "learning_rate_multiplier": 1.5}
    assert all(r.headers.get("Authorization") == f"Bearer {KEY}" for r in service.requests)
    # The events became the same metrics lines a local run writes: every step once, the service's losses.
    run = tuitune_dirs["data"] / "runs" / "lab"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 13))
    assert [row["loss"] for row in rows] == [service.loss_at(step) for step in range(1, 13)]
    assert [row["step"] for row in rows if "eval_loss" in row] == [4, 8, 12]
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["step"], status["total_steps"]) == ("done", 12, 12)
    assert [c["step"] for c in status["checkpoints"]] == [12, 8, 4]
    # The finetune is a catalog model on the same endpoint, paired with its base, and answers through the engine.
    [job] = service.jobs.values()
    listed = run_cli("models").stdout
    assert "lab" in listed and "finetuned" in listed
    chat = run_cli("chat", "lab", "Who are you?")
    assert chat.returncode == 0 and TUNED_ANSWER in chat.stdout, chat.stderr
    compared = run_cli("compare", "--models", "svc-base,lab", "Who are you?")
    assert compared.returncode == 0, compared.stderr
    assert compared.stdout.index(BASE_ANSWER) < compared.stdout.index(TUNED_ANSWER)
    asked = {r.body["model"] for r in service.requests if r.path.endswith("/chat/completions")}
    assert asked == {"stub-base", job.fine_tuned_model}
    plain = run_cli("runs").stdout.splitlines()  # training runs first, then the eval runs as before
    assert plain[:2] == ["training runs", "name  where            base       state  step   loss"]
    assert plain[2].split() == ["lab", "remote", "svc-base", "stub-base", "done", "12/12", f"{rows[-1]['loss']:.4f}"]
    assert plain[4] == "eval runs"
    runs = run_cli("runs", "--training", "--json")
    [row] = json.loads(runs.stdout)
    assert (row["name"], row["where"], row["state"], row["job"]) == ("lab", "remote svc-base", "done", job.id)
    assert_no_key(out, result.stderr, runs.stdout, *run_files(tuitune_dirs["data"], "lab").values())


def test_the_billed_estimate_is_the_checkers_file_tokens_times_epochs(service, tuitune_dirs):
    report = check_dataset(DATA)
    assert report.file_tokens == sum(example_tokens(example) for example in load_examples(DATA)) > 0
    check = check_for_service(DATA, epochs=3)
    assert check.billed_tokens == report.file_tokens * 3
    result = train("estimate", "--epochs", "3")
    assert result.returncode == 0, result.stderr
    assert f"= {report.file_tokens * 3:,} " in result.stdout
    config = json.loads((tuitune_dirs["data"] / "runs" / "estimate" / "config.json").read_text())
    assert config["remote"]["billed_tokens_estimate"] == report.file_tokens * 3
    shown = json.loads(run_cli("data", "check", str(DATA), "--json").stdout)
    assert shown["file_tokens"] == report.file_tokens


# -- refused before anything is uploaded ---------------------------------------------------------------
def test_data_the_service_would_refuse_is_refused_before_any_request(service, tuitune_dirs, tmp_path: Path):
    completion = tmp_path / "completion.jsonl"
    completion.write_text("\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(12)))
    few = tmp_path / "few.jsonl"
    few.write_text("\n".join(DATA.read_text().splitlines()[:4]) + "\n")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([json.loads(line) for line in DATA.read_text().splitlines()[:12]]))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(DATA.read_text().replace('"assistant"', '"robot"', 1))
    before = len(service.requests)
    one_clear_error(
        train("c1", data=completion), "completion.jsonl: file:", "OpenAI chat JSONL", "nothing was uploaded"
    )
    one_clear_error(train("c2", data=few), "only 4 valid examples", "at least 10")
    one_clear_error(train("c3", data=array), "not one JSON array")
    one_clear_error(train("c4", data=broken), "broken.jsonl: line 1:", "bad role")
    assert len(service.requests) == before  # not one upload
    assert not (tuitune_dirs["data"] / "runs" / "c1").exists()


def test_flags_and_endpoints_that_cannot_work_are_refused_with_one_line(service, tuitune_dirs, monkeypatch):
    one_clear_error(train("x", "--rank", "8"), "--rank: local training only")
    one_clear_error(train("x", "--epochs", "1.5"), "--epochs for a service is a whole number")
    one_clear_error(train("x", "--suffix", "bad suffix!"), "--suffix")
    one_clear_error(run_cli("train", "--remote", "smollm2-135m-instruct", "--base", "m", "--data", str(DATA)),
                    "--remote takes an endpoint in the catalog")  # fmt: skip
    one_clear_error(run_cli("train", "--name", "y", "--base", "smollm2-135m-instruct", "--data", str(DATA),
                            "--suffix", "s"), "add --remote ENDPOINT")  # fmt: skip
    monkeypatch.delenv("FT_KEY")
    before = len(service.requests)
    one_clear_error(run_cli("train", "--remote", "svc-base", "--base", "stub-base", "--data", str(DATA),
                            env={"FT_KEY": ""}), "FT_KEY is not set")  # fmt: skip
    assert len(service.requests) == before


# -- the service says no --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "fragments"),
    [
        ("unauthorized", ("(401)", "check the key in FT_KEY", "[api key removed]")),
        ("forbidden", ("(403)", "check the key in FT_KEY")),
        ("no-finetuning", ("does not implement fine-tuning", "404")),
        ("reject-file", ("(400)", "Line 3", "Invalid file format")),
        ("rate-limited", ("rate limiting (429)", "retry in 7 s")),
        ("quota", ("quota exceeded (429)",)),
    ],
)
def test_each_refusal_is_one_clear_line_without_the_key(service, tuitune_dirs, mode, fragments):
    service.mode = mode
    result = train(f"refused-{mode}")
    message = one_clear_error(result, *fragments)
    assert "\x1b" not in result.stderr + result.stdout and "[31m" not in result.stderr  # dropped, not half shown
    assert ".;" not in result.stderr
    assert_no_key(result.stdout, result.stderr, *run_files(tuitune_dirs["data"], f"refused-{mode}").values())
    status = json.loads((tuitune_dirs["data"] / "runs" / f"refused-{mode}" / "status.json").read_text())
    assert status["state"] == "failed" and status["message"] in message
    if mode == "reject-file":  # the upload happened and its id was kept: nothing the service has is lost
        config = json.loads((tuitune_dirs["data"] / "runs" / "refused-reject-file" / "config.json").read_text())
        assert config["remote"]["training_file"] == service.uploaded()[0].id


def test_a_job_that_fails_says_why(service, tuitune_dirs):
    service.mode = "job-fails"
    result = train("fails")
    one_clear_error(result, "run 'fails': the job failed on the service", "invalid training file")
    assert "the job failed on the service" not in result.stdout  # said once, in the error line
    rows = (tuitune_dirs["data"] / "runs" / "fails" / "metrics.jsonl").read_text().splitlines()
    assert rows and all(json.loads(row)["step"] <= service.fail_at_step for row in rows)


def test_a_dropped_connection_while_following_keeps_following(service, tuitune_dirs):
    service.mode = "drop-once"
    result = train("dropped")
    assert result.returncode == 0, result.stderr
    assert service.drops == 1
    assert "still following" in result.stdout
    log = (tuitune_dirs["data"] / "runs" / "dropped" / "train.log").read_text()
    assert "following paused" in log and "following again" in log
    steps = [json.loads(line)["step"] for line in (tuitune_dirs["data"] / "runs" / "dropped" / "metrics.jsonl")
             .read_text().splitlines()]  # fmt: skip
    assert steps == list(range(1, 13))


# -- Stop, quit, come back ----------------------------------------------------------------------------------
def start_follower(name: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "tuitune", "train", "--remote", "svc-base", "--base", "stub-base",
               "--data", str(DATA), "--name", name, *extra]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_state(run: Path, *states: str, timeout: float = 30) -> dict:
    from tuitune.training.runs import run_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run_status(run)
        if status.get("state") in states:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{run.name} never reached {states}: {run_status(run)}")


def test_cancel_stops_the_job_and_the_follower_says_so(service, tuitune_dirs):
    service.poll_delay_s = 0.2
    follower = start_follower("to-cancel")
    run = tuitune_dirs["data"] / "runs" / "to-cancel"
    wait_for_state(run, "running")
    cancelled = run_cli("train", "--name", "to-cancel", "--cancel")
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    _, err = follower.communicate(timeout=30)
    assert follower.returncode == 1 and "cancelled" in err
    [job] = service.jobs.values()
    assert job.status == "cancelled"
    assert wait_for_state(run, "cancelled")["state"] == "cancelled"
    assert "lab" not in run_cli("models").stdout


def test_ctrl_c_leaves_the_job_running_and_resume_follows_it_to_the_end(service, tuitune_dirs):
    service.poll_delay_s = 0.2
    follower = start_follower("detach")
    run = tuitune_dirs["data"] / "runs" / "detach"
    wait_for_state(run, "running")
    follower.send_signal(signal.SIGINT)
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 130 and "keeps running on the service" in out
    status = wait_for_state(run, "detached")
    assert "--resume" in status["message"]
    listed = run_cli("runs", "--training")
    assert "detached" in listed.stdout
    service.poll_delay_s = 0.0
    again = run_cli("train", "--name", "detach", "--resume", timeout=120)
    assert again.returncode == 0, again.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # no event read twice, none missed
    assert wait_for_state(run, "done")["fine_tuned_model"]
    again = run_cli("train", "--name", "detach", "--resume")
    assert again.returncode == 0 and "nothing to follow" in again.stdout


def test_a_remote_finetune_in_the_catalog_is_checked(tuitune_dirs, tmp_path: Path):
    from tuitune.catalog import CatalogError, parse_catalog_text

    entry = """[[model]]\nid = "ft"\nname = "ft"\nkind = "finetuned"\nfamily = "remote"\nbase_url = "http://h/v1"\n"""
    [parsed] = parse_catalog_text(entry + 'model = "ft:m:org:x:1"\n', tmp_path / "models.toml")
    assert parsed.remote and parsed.endpoint["model"] == "ft:m:org:x:1" and parsed.adapter is None
    with pytest.raises(CatalogError, match="no local 'adapter'"):
        parse_catalog_text(entry + 'model = "m"\nadapter = "a.gguf"\n', tmp_path / "models.toml")
    with pytest.raises(CatalogError, match="needs base_url and model"):
        parse_catalog_text(entry, tmp_path / "models.toml")


def test_the_key_is_scrubbed_from_what_the_service_echoes_while_followed(service, tuitune_dirs):
    service.poll_delay_s = 0.1
    follower = start_follower("echo")
    run = tuitune_dirs["data"] / "runs" / "echo"
    wait_for_state(run, "running")
    [job] = service.jobs.values()
    with service.lock:  # a leaky service repeats the key it was sent, in an event and an error-level one
        service._event(job, f"debug: request authorized with {KEY}")
        service._event(job, f"\x1b]52;c;{KEY}\x07 clipboard", level="warn")
    service.poll_delay_s = 0.0
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    log = (run / "train.log").read_text()
    assert "request authorized with [api key removed]" in log and "warn: ␛]52;c;[api key removed]␇" in log
    assert_no_key(out, err, *run_files(tuitune_dirs["data"], "echo").values())


def test_a_run_cut_off_before_its_job_existed_is_failed_not_followed_forever(service, tuitune_dirs):
    from tuitune.remote_training.runs import follow
    from tuitune.training.runs import TrainConfig, run_status

    run = tuitune_dirs["data"] / "runs" / "cut"
    run.mkdir(parents=True)
    remote = {"endpoint": "svc-base", "base_url": service.base_url, "model": "stub-base", "api_key_env": "FT_KEY"}
    TrainConfig(name="cut", base="stub-base", data=str(DATA), remote=remote).write(run / "config.json")
    (run / "status.json").write_text(json.dumps({"state": "uploading", "pid": 999_999_999, "remote": True}))
    assert run_status(run)["state"] == "detached"  # killed mid-upload
    from tuitune.tui.screens.train_remote import reattach_detached

    assert reattach_detached() == ([], [])  # the Train screen does not create (and bill) a job by itself
    with pytest.raises(Exception, match="stopped before the job was created"):
        follow(run)
    assert run_status(run)["state"] == "failed"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)  # fmt: skip
NUMBERS = st.integers(-(10**30), 10**30) | st.floats(allow_nan=True, allow_infinity=True) | JSON
EVENT_DATA = (
    st.fixed_dictionaries(
        {},
        optional={
            "step": NUMBERS,
            "train_loss": NUMBERS,
            "valid_loss": NUMBERS,
            "total_steps": NUMBERS,
            "train_mean_token_accuracy": NUMBERS,
        },
    )
    | JSON
)
EVENTS = st.fixed_dictionaries({"type": st.sampled_from(["metrics", "message"]) | JSON},
                               optional={"data": EVENT_DATA, "message": JSON, "level": JSON})  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(event=EVENTS | JSON, total=JSON)
def test_any_event_the_service_sends_becomes_a_metrics_line_or_nothing(event, total):
    from tuitune.remote_training.runs import _metrics_row
    from tuitune.training.runs import TrainConfig

    row = _metrics_row(event if isinstance(event, dict) else {"type": "metrics", "data": event}, total,
                       TrainConfig(name="f", base="b", data="d", epochs=2))  # fmt: skip
    if row is not None:
        assert isinstance(row["step"], int) and math.isfinite(row["loss"])
        json.dumps(row, allow_nan=False)


def test_a_refused_job_is_created_again_by_resume_with_the_files_already_uploaded(service, tuitune_dirs):
    service.mode = "rate-limited"
    one_clear_error(train("retry", "--val", str(HELDOUT)), "rate limiting (429)", "retry in 7 s")
    assert len(service.uploaded()) == 2 and not service.jobs
    service.mode = "ok"
    again = run_cli("train", "--name", "retry", "--resume", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "creating it (files already uploaded are not sent again)" in again.stdout
    assert len(service.uploaded()) == 2 and len(service.jobs) == 1  # no second upload
    assert "added to the catalog as 'retry'" in again.stdout


def test_resume_and_cancel_say_what_the_run_is_before_asking_the_service(service, tuitune_dirs):
    one_clear_error(run_cli("train", "--name", "nope", "--resume"), "no run named 'nope'")
    one_clear_error(run_cli("train", "--remote", "svc-base", "--name", "nope", "--resume"), "no run named 'nope'")
    one_clear_error(run_cli("train", "--name", "nope", "--cancel"), "no run named 'nope'")
    assert train("finished").returncode == 0
    one_clear_error(run_cli("train", "--name", "finished", "--cancel", "--resume"), "--cancel takes only --name")
    before = len(service.requests)
    cancelled = run_cli("train", "--name", "finished", "--cancel", env={"FT_KEY": ""})
    assert cancelled.returncode == 0 and "is done: there is no job to cancel" in cancelled.stdout
    assert len(service.requests) == before
