"""Progress a person can read (`asymvae.progress`): the line, its cadence on an injected clock, unknown totals,
bar or lines by terminal, quiet phases; and that prepare and eval log a bounded number of lines with rate and ETA."""

from __future__ import annotations

import io
import logging
import re

import pytest
import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

from asymvae.config import ConfigError
from asymvae.data.prepare import PrepareConfig, prepare
from asymvae.evaluation.data import EvalItem
from asymvae.evaluation.run import score_items
from asymvae.progress import EVERY_ENV, Progress, format_duration, format_rate, phase, progress_every

LOGGER = "asymvae.test_progress"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


def _lines(caplog: pytest.LogCaptureFixture, logger: str = LOGGER) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_durations_and_rates_read_like_a_person_writes_them():
    assert [format_duration(s) for s in (0, 0.4, 42.4, 59.6, 185, 3599.4, 3720, 93784)] == [
        "0s",
        "0s",
        "42s",
        "1m00s",
        "3m05s",
        "59m59s",
        "1h02m",
        "26h03m",
    ]
    assert [format_rate(r, "img") for r in (0.123, 6.493, 52.34, 812.4)] == [
        "0.12 img/s",
        "6.49 img/s",
        "52.3 img/s",
        "812 img/s",
    ]


def test_the_line_has_done_total_elapsed_rate_and_eta(caplog):
    clock = Clock()
    shown = Progress("preparing", 100, "img", logger=logging.getLogger(LOGGER), clock=clock, stream=io.StringIO())
    clock.now += 50
    shown.done = 25
    assert shown.line() == "preparing: 25/100 img (25%), 50s elapsed, 0.50 img/s, ETA 2m30s"
    shown.done = 100
    assert shown.line() == "preparing: 100/100 img (100%), 50s elapsed, 2.00 img/s, done"
    shown.done = 0
    assert shown.line() == "preparing: 0/100 img (0%), 50s elapsed, 0.00 img/s, ETA unknown"


def test_lines_come_for_the_first_item_then_every_period_and_at_the_end(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress(
        "scoring", 1000, "img", logger=logging.getLogger(LOGGER), every_s=30, clock=clock, stream=io.StringIO()
    ) as shown:
        for step in range(1, 1001):  # one item every 0.1 s: 100 s in all
            clock.now += 0.1
            shown.update()
            if step == 1:
                assert len(_lines(caplog)) == 1
    lines = _lines(caplog)
    # the first item, 30.1 s, 60.1 s and 90.1 s after that line, and the end (100 s)
    assert [re.match(r"scoring: (\d+)/1000", line).group(1) for line in lines] == ["1", "302", "603", "904", "1000"]
    assert lines[1] == "scoring: 302/1000 img (30%), 30s elapsed, 10.0 img/s, ETA 1m10s"
    assert lines[-1].endswith("1m40s elapsed, 10.0 img/s, done")
    shown.close()  # closing twice logs nothing more
    assert len(_lines(caplog)) == 5


def test_a_stream_of_unknown_length_shows_count_and_rate_without_eta(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger=LOGGER)
    shown = Progress("scoring", None, "img", logger=logging.getLogger(LOGGER), every_s=30, clock=clock)
    clock.now += 4
    shown.update(2)
    clock.now += 10
    shown.update(5)
    shown.close()
    assert _lines(caplog) == ["scoring: 2 img, 4s elapsed, 0.50 img/s", "scoring: 7 img, 14s elapsed, 0.50 img/s"]


def test_nothing_done_logs_only_what_it_waits_for(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    Progress(
        "scoring", 10, logger=logging.getLogger(LOGGER), stream=io.StringIO(), waiting_for="the first batch"
    ).close()
    assert _lines(caplog) == ["scoring: waiting for the first batch"]


def test_a_terminal_gets_a_bar_and_no_lines_anything_else_lines_and_no_bar(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    terminal, pipe = Terminal(), io.StringIO()
    with Progress("preparing", 4, "img", logger=logging.getLogger(LOGGER), stream=terminal) as shown:
        shown.update(4)
    assert shown.bar is not None and "4/4" in terminal.getvalue() and _lines(caplog) == []
    with Progress("preparing", 4, "img", logger=logging.getLogger(LOGGER), stream=pipe) as shown:
        shown.update(4)
    assert shown.bar is None and pipe.getvalue() == "" and len(_lines(caplog)) == 1
    with Progress("preparing", 4, "img", logger=logging.getLogger(LOGGER), stream=terminal, bar=False) as shown:
        shown.update(4)
    assert shown.bar is None and len(_lines(caplog)) == 2  # bar=False: lines even on a terminal


def test_the_cadence_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(EVERY_ENV, raising=False)
    assert progress_every() == 30
    monkeypatch.setenv(EVERY_ENV, "2.5")
    assert progress_every() == 2.5 and Progress("x", 1, stream=io.StringIO()).every_s == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(EVERY_ENV, bad)
        with pytest.raises(ConfigError, match=f"{EVERY_ENV}='{bad}' is not a number of seconds"):
            progress_every()


def test_a_quiet_phase_says_what_it_waits_for_and_how_long_it_took(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger=LOGGER)
    with phase("loading the base VAE from /models/sd", logging.getLogger(LOGGER), clock):
        assert _lines(caplog) == ["loading the base VAE from /models/sd ..."]
        clock.now += 65
    assert _lines(caplog)[1] == "loading the base VAE from /models/sd: done in 1m05s"
    with pytest.raises(OSError), phase("checking 3 shards", logging.getLogger(LOGGER), clock):
        raise OSError("gone")
    assert _lines(caplog)[2:] == ["checking 3 shards ..."]  # the error says the rest


_COUNTS = r"\b\d+/{total} (img|images)\b"


def test_prepare_logs_a_bounded_number_of_lines_with_rate_and_eta(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(EVERY_ENV, "3600")  # this run takes far less: lines for the first image and the end only
    caplog.set_level(logging.INFO, logger="asymvae.data.prepare")
    cfg = PrepareConfig(max_side=32, min_side=16, workers=1)
    result = prepare("builtin:demo?count=60&size=40", str(tmp_path / "out"), cfg, progress=False)
    total = result.processed
    counted = [line for line in _lines(caplog, "asymvae.data.prepare") if re.search(_COUNTS.format(total=total), line)]
    assert len(counted) == 2, counted  # not one per 10 % (or per image)
    assert counted[0].startswith(f"preparing: 1/{total} img") and "img/s" in counted[0] and "ETA" in counted[0]
    assert counted[1].startswith(f"preparing: {total}/{total} img (100%)") and counted[1].endswith(", done")


def test_eval_logs_a_bounded_number_of_lines_with_rate_and_eta(asym_export_dir, base_vae_dir, monkeypatch, caplog):
    monkeypatch.setenv(EVERY_ENV, "3600")
    caplog.set_level(logging.INFO, logger="asymvae.evaluation.run")
    model = AsymmetricAutoencoderKL.from_pretrained(asym_export_dir, subfolder="vae").eval()
    base = AutoencoderKL.from_pretrained(base_vae_dir, subfolder="vae").eval()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    items = [EvalItem(f"k{i}", image, mask) for i in range(12)]
    score_items(model, base, items, 2, torch.device("cpu"), total=len(items))
    lines = _lines(caplog, "asymvae.evaluation.run")
    counted = [line for line in lines if re.search(_COUNTS.format(total=12), line)]
    assert len(counted) == 2, counted  # not one per batch (6)
    assert lines[0] == "scoring: waiting for the first batch"
    assert counted[0].startswith("scoring: 2/12 img") and "img/s" in counted[0] and "ETA" in counted[0]
    assert counted[1].startswith("scoring: 12/12 img (100%)") and counted[1].endswith(", done")
