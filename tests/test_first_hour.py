"""The operator's first hour, through the real ``vigil`` command (a subprocess each).

Every user mistake gets one line and a non-zero exit, never a traceback; a run that would
do nothing says so; Ctrl-C and SIGTERM stop a run cleanly, with its summary and exit 0.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "security"
AUTH_LOG = DATA / "ssh_auth_loghub" / "OpenSSH_2k.log"
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]
ENV = {k: v for k, v in os.environ.items() if k != "VIGIL_WEBHOOK_SECRET"}


def vigil(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VIGIL, *args],
        cwd=cwd,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The run failed with ``code`` and said why in exactly one line, no traceback."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert r.returncode == code, out
    # "alert state: ..." says which store a command uses: information, not the message
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("alert state:")]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def summary_of(stderr: str) -> dict:
    for line in reversed(stderr.splitlines()):
        if line.startswith('{"summary"'):
            return dict(json.loads(line)["summary"])
    msg = f"no summary in:\n{stderr[-2000:]}"
    raise AssertionError(msg)


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------- mistakes: one line
@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["replay", "/nonexistent/auth.log", "--format", "ssh"], 1, ["no such file"]),
        (["replay", "/nonexistent/*.log", "--format", "ssh"], 1, ["no file matches"]),
        (["replay", str(AUTH_LOG), "--format", "sshd"], 2, ["invalid choice", "'sshd'"]),
        (["--log-level", "bogus", "version"], 2, ["--log-level"]),
        (["silence", "add", "a~~b", "--author", "me", "--comment", "x"], 2, ["not a matcher"]),
        (
            ["silence", "add", "a=b", "--for", "2x", "--author", "me", "--comment", "x"],
            2,
            ["not a duration"],
        ),
        (["run", "securty", "-c", "x.yaml"], 2, ["unknown flow", "securty"]),
        (["run", "security", "-c", "/nonexistent.yaml"], 1, ["cannot read config"]),
        (["replay", str(AUTH_LOG), "--format", "ssh", "--workers", "0"], 2, ["--workers"]),
        (["backtest", "--data", "/nonexistent"], 2, ["/nonexistent"]),
    ],
)
def test_a_mistake_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, args: list[str], code: int, words: list[str]
) -> None:
    one_line_error(vigil(*args, cwd=tmp_path), code, *words)


def test_version_flag(tmp_path: Path) -> None:
    r = vigil("--version", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout.startswith("vigil ") and "bytewax" in r.stdout


def test_a_feed_without_inputs_is_refused_by_run_and_check_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "v.yaml", {"security": {"year": 2017}})
    one_line_error(vigil("run", "security", "-c", str(cfg), cwd=tmp_path), 2, "no inputs")
    r = vigil("check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 1 and "vigil run would do nothing" in r.stderr
    assert "Traceback" not in r.stderr


def test_every_line_dead_lettered_exits_non_zero_with_a_hint(tmp_path: Path) -> None:
    r = vigil("replay", str(AUTH_LOG), "--format", "zeek", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    s = summary_of(r.stderr)
    assert s["lines"] == 2000 and s["dead_lettered"] == 2000
    assert any("--format zeek" in h for h in s["hints"])
    assert "Traceback" not in r.stderr


def test_a_backtest_over_files_without_series_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.csv").write_text("a,b\n", encoding="utf-8")
    r = vigil("backtest", "--data", str(tmp_path), cwd=tmp_path)
    one_line_error(r, 2, "no indicator data")


# ---------------------------------------------------------------- paths and files
def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "logs").mkdir()
    (conf / "logs" / "auth.log").write_bytes(AUTH_LOG.read_bytes())
    cfg = write_config(
        conf / "vigil.yaml",
        {
            "security": {
                "year": 2017,
                "inputs": [{"kind": "file", "paths": ["logs/*.log"], "format": "ssh"}],
            },
            "metrics": {"enabled": False},
            "alerts": {"file": "out/alerts.jsonl"},
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = vigil("run", "security", "-c", str(cfg), cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert summary_of(r.stderr)["lines"] == 2000
    assert (conf / "out" / "alerts.jsonl").exists()  # beside the config, not in the cwd
    assert not (elsewhere / "out").exists()


def test_a_compressed_rotated_log_is_replayed(tmp_path: Path) -> None:
    gz = tmp_path / "auth.log.2.gz"
    gz.write_bytes(gzip.compress(AUTH_LOG.read_bytes()))
    plain = vigil("replay", str(AUTH_LOG), "--format", "ssh", "--alerts", "a.jsonl", cwd=tmp_path)
    packed = vigil("replay", str(gz), "--format", "ssh", "--alerts", "b.jsonl", cwd=tmp_path)
    assert packed.returncode == 0, packed.stderr
    a, b = summary_of(plain.stderr), summary_of(packed.stderr)
    assert (b["lines"], b["dead_lettered"], b["detections"]) == (
        a["lines"],
        a["dead_lettered"],
        a["detections"],
    )
    assert b["lines"] == 2000 and b["dead_lettered"] == 0


def test_a_compressed_log_as_a_file_input_is_refused_by_name(tmp_path: Path) -> None:
    gz = tmp_path / "auth.log.2.gz"
    gz.write_bytes(gzip.compress(AUTH_LOG.read_bytes()))
    cfg = write_config(
        tmp_path / "v.yaml",
        {"security": {"inputs": [{"kind": "file", "paths": [str(gz)], "format": "ssh"}]}},
    )
    one_line_error(vigil("run", "security", "-c", str(cfg), cwd=tmp_path), 1, "auth.log.2.gz")


# ---------------------------------------------------------------- safe by default
def test_webhooks_are_never_unsigned_by_accident(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/alerts"  # never reached: the run stops before
    line = one_line_error(
        vigil("replay", str(AUTH_LOG), "--format", "ssh", "--webhook", url, cwd=tmp_path),
        1,
        "VIGIL_WEBHOOK_SECRET",
    )
    assert "insecure_unsigned" in line
    cfg = write_config(
        tmp_path / "v.yaml",
        {
            "security": {"inputs": [{"kind": "file", "paths": [str(AUTH_LOG)], "format": "ssh"}]},
            "alerts": {"webhook": {"url": url}},
        },
    )
    r = vigil("check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 1 and "VIGIL_WEBHOOK_SECRET" in r.stderr
    assert (
        vigil("check-config", str(cfg), cwd=tmp_path, env={"VIGIL_WEBHOOK_SECRET": "s"}).returncode
        == 0
    )
    cfg = write_config(
        tmp_path / "v.yaml",
        {
            "security": {"inputs": [{"kind": "file", "paths": [str(AUTH_LOG)], "format": "ssh"}]},
            "alerts": {"webhook": {"url": url, "insecure_unsigned": True}},
        },
    )
    assert vigil("check-config", str(cfg), cwd=tmp_path).returncode == 0


# ---------------------------------------------------------------- the alert store commands
def test_list_commands_name_their_store_and_do_not_create_one(tmp_path: Path) -> None:
    one_line_error(vigil("alerts", "list", cwd=tmp_path), 1, "no alert state in")
    one_line_error(vigil("silence", "list", cwd=tmp_path), 1, "no alert state in")
    assert not (tmp_path / "vigil-out").exists()


def test_silence_expire_takes_a_unique_prefix(tmp_path: Path) -> None:
    add = ["silence", "add", "entity=10.0.0.1", "--author", "me", "--comment", "test"]
    sid = vigil(*add, cwd=tmp_path).stdout.strip()
    assert len(sid) > 8
    r = vigil("silence", "expire", sid[:8], cwd=tmp_path)
    assert r.returncode == 0 and f"expired {sid}" in r.stdout, r.stderr
    assert "alert state:" in r.stderr  # says which store it used


# ---------------------------------------------------------------- Ctrl-C and SIGTERM
def _start(args: list[str], cwd: Path, err: Path) -> subprocess.Popen:
    with err.open("w") as fh:  # the child keeps its own copy of the descriptor
        p = subprocess.Popen(
            [*VIGIL, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=fh
        )
    deadline = time.monotonic() + 60
    while "metrics:" not in err.read_text() and time.monotonic() < deadline:
        assert p.poll() is None, err.read_text()
        time.sleep(0.2)
    time.sleep(1.5)  # the dataflow is running, not only the metrics server
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_replay_and_run_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    live = tmp_path / "live.log"
    live.write_bytes(AUTH_LOG.read_bytes().rstrip(b"\n") + b"\n")  # no partial last line
    cfg = write_config(
        tmp_path / "v.yaml",
        {
            "security": {
                "year": 2017,
                "inputs": [{"kind": "file", "paths": [str(live)], "format": "ssh", "follow": True}],
            },
            "metrics": {"port": 0},
        },
    )
    runs = {
        # an hour of log per second: the replay is still going when the signal comes
        "replay": [
            "replay",
            str(AUTH_LOG),
            "--format",
            "ssh",
            "--speed",
            "60",
            "--metrics-port",
            "0",
        ],
        "run": ["run", "security", "-c", str(cfg)],  # follows the file: never ends alone
    }
    for name, args in runs.items():
        err = tmp_path / f"{name}-stderr.txt"
        p = _start(args, tmp_path, err)
        p.send_signal(sig)
        assert p.wait(timeout=60) == 0, (name, err.read_text())
        text = err.read_text()
        assert "Traceback" not in text and "panicked" not in text, text
        s = summary_of(text)
        assert s["interrupted"] is True and s["signal"] == int(sig)
        if name == "run":
            assert s["lines"] == 2000  # everything read before the stop is accounted for


# ---------------------------------------------------------------- check-config says what is true
QUEUES_CSV = "case_id,dept,opened,closed\n1,PWD,2015-01-01 10:00:00,\n"


def test_check_config_checks_mapped_columns_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "cases.csv").write_text(QUEUES_CSV, encoding="utf-8")
    mapping = {"id": "case_id", "agency": "dept", "received_at": "opened", "closed_at": "closd"}
    cfg = write_config(
        tmp_path / "q.yaml",
        {
            "service_queues": {
                "inputs": [{"kind": "replay", "paths": ["cases.csv"], "mapping": mapping}]
            }
        },
    )
    r = vigil("check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 1, r.stdout
    assert "column 'closd' is not in" in r.stderr and "case_id, dept, opened, closed" in r.stderr
    mapping["closed_at"] = "closed"
    write_config(
        cfg,
        {
            "service_queues": {
                "inputs": [{"kind": "replay", "paths": ["cases.csv"], "mapping": mapping}]
            }
        },
    )
    r = vigil("check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no deadline source" in r.stdout  # a warning: on-time figures would mean nothing
    assert "security" not in r.stdout  # only the sections present are explained


def test_check_config_rejects_an_unknown_media_field_and_warns_of_no_watch_list(
    tmp_path: Path,
) -> None:
    (tmp_path / "posts.csv").write_text("id,text,created\n1,hello,2015-02-20\n", encoding="utf-8")
    inp = {"kind": "replay", "paths": ["posts.csv"], "format": "csv"}
    cfg = write_config(
        tmp_path / "m.yaml",
        {"media": {"inputs": [{**inp, "fields": {"titel": "text"}}]}},
    )
    r = vigil("check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 1 and "unknown item field(s) titel" in r.stderr
    write_config(cfg, {"media": {"inputs": [{**inp, "fields": {"published_at": "created"}}]}})
    r = vigil("check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "media.watch is empty" in r.stdout


def test_check_config_says_which_indicator_detector_runs(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "i.yaml",
        {
            "indicators": {
                "inputs": [{"kind": "file", "paths": [str(tmp_path / "*.csv")]}],
                "rules": [{"match": "kpi.*", "detector": {"kind": "rolling_mad"}}],
            }
        },
    )
    (tmp_path / "kpi.csv").write_text("timestamp,value\n2020-01-01T00:00:00Z,1\n")
    r = vigil("check-config", str(cfg), cwd=tmp_path)
    assert "'kpi.*': rolling_mad, threshold 6" in r.stdout
    assert "every other series '*': ensemble, threshold 0.25" in r.stdout


def test_dead_letters_carry_their_origin_and_time(tmp_path: Path) -> None:
    vigil("replay", str(AUTH_LOG), "--format", "zeek", cwd=tmp_path)
    first = json.loads((tmp_path / "vigil-out" / "dead_letters.jsonl").read_text().splitlines()[0])
    assert first["origin"].endswith("OpenSSH_2k.log") and first["at"].endswith("Z")
    assert first["reason"] == "bad zeek row"


def test_a_signal_stops_a_local_cluster_cleanly(tmp_path: Path) -> None:
    live = tmp_path / "live.log"
    live.write_bytes(AUTH_LOG.read_bytes().rstrip(b"\n") + b"\n")
    cfg = write_config(
        tmp_path / "v.yaml",
        {
            "security": {
                "year": 2017,
                "inputs": [{"kind": "file", "paths": [str(live)], "format": "ssh", "follow": True}],
            },
            "metrics": {"port": 0},
        },
    )
    err = tmp_path / "cluster-stderr.txt"
    p = _start(["run", "security", "-c", str(cfg), "--processes", "2"], tmp_path, err)
    time.sleep(2)
    p.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C, to the supervisor
    assert p.wait(timeout=90) == 0, err.read_text()[-3000:]
    text = err.read_text()
    assert "Traceback" not in text and "panicked" not in text, text[-3000:]
    stops = [ln for ln in text.splitlines() if ln.startswith('{"summary"')]
    assert len(stops) == 2 and all(json.loads(s)["summary"]["interrupted"] for s in stops)
    assert sum(json.loads(s)["summary"]["lines"] for s in stops) == 2000
