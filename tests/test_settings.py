"""Settings remembered across launches (settings.toml), and the range-checked parameter fields."""

from __future__ import annotations

import math
import os
import stat
import tomllib
from pathlib import Path

import pytest
from textual.widgets import Input, Label

from tests.support.pilot import scripted_app, type_and_send, wait_idle
from tuitune.errors import TuituneError
from tuitune.settings import Settings, load_settings, save_settings, settings_path
from tuitune.tui.screens.dialogs import PaneParams
from tuitune.tui.widgets.params import ParamsPanel, check_value, parse_field

GOOD = Settings(
    theme="nord",
    sampling={"temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "seed": -1, "stop": ["\n\n"], "system": "Be brief.",
              "n_ctx": 2048},
    compare=[{"model": "gemma-3-270m", "mode": "raw"}, {"model": "smollm2-135m-instruct", "mode": "chat"}],
    train={"name": "my-run", "lr": "5e-4", "base": "smollm2-135m-instruct"},
)  # fmt: skip


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- settings.py -----------------------------------------------------------------------------------
def test_settings_path_is_in_the_config_dir(tuitune_dirs):
    assert settings_path() == tuitune_dirs["config"] / "settings.toml"


def test_missing_file_gives_defaults_without_a_problem(tmp_path: Path):
    assert load_settings(tmp_path / "settings.toml") == (Settings(), None)
    assert not (tmp_path / "settings.toml").exists()  # nothing written just for reading


def test_round_trip(tmp_path: Path):
    path = tmp_path / "settings.toml"
    save_settings(GOOD, path)
    assert load_settings(path) == (GOOD, None)
    assert tomllib.loads(path.read_text())["compare"][0] == {"model": "gemma-3-270m", "mode": "raw"}
    assert load_settings(path)[0].sampling["temperature"] == 0.2


def test_default_path_round_trip_and_private_folder(tuitune_dirs):
    assert not tuitune_dirs["config"].exists()
    save_settings(GOOD)
    assert load_settings() == (GOOD, None)
    assert stat.S_IMODE(tuitune_dirs["config"].stat().st_mode) == 0o700
    assert leftovers(tuitune_dirs["config"]) == []


def test_corrupt_file_is_kept_aside_and_replaced(tmp_path: Path):
    path = tmp_path / "settings.toml"
    original = 'theme = "nord"\n[sampling]\ntemperature = = 3\n'
    path.write_text(original)
    settings, problem = load_settings(path)
    assert settings == Settings()
    assert problem is not None and "\n" not in problem
    assert str(path) in problem and "line 3" in problem and "replaced" in problem and "settings.toml.bad" in problem
    assert (tmp_path / "settings.toml.bad").read_text() == original  # nothing the user wrote is lost
    assert load_settings(path) == (Settings(), None)  # the new file is valid


def test_undecodable_file_is_replaced(tmp_path: Path):
    path = tmp_path / "settings.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    settings, problem = load_settings(path)
    assert settings == Settings() and problem and str(path) in problem
    assert (tmp_path / "settings.toml.bad").read_bytes() == b"\xff\xfe\x00garbage"


def test_wrong_values_are_dropped_field_by_field(tmp_path: Path):
    path = tmp_path / "settings.toml"
    path.write_text(
        "theme = 5\n"
        "future_key = 'ignored'\n"
        "[sampling]\n"
        "top_p = 9\n"
        "temperature = 'hot'\n"
        "top_k = 2.5\n"
        "min_p = nan\n"
        "max_tokens = 100\n"
        "repeat_penalty = 1.1\n"
        "system = 'Be kind.'\n"
        "stop = [1, 2]\n"
        "unknown = 1\n"
        "[[compare]]\nmodel = 'gemma-3-270m'\nmode = 'sideways'\n"
        "[[compare]]\nmodel = 'smollm2-135m-instruct'\nmode = 'chat'\n"
        "[train]\nname = 'kept'\nmax_steps = 40\n"
    )
    settings, problem = load_settings(path)
    assert settings.theme is None
    assert settings.sampling == {"max_tokens": 100, "repeat_penalty": 1.1, "system": "Be kind."}
    assert settings.compare == [{"model": "smollm2-135m-instruct", "mode": "chat"}]
    assert settings.train == {"name": "kept"}
    assert problem is not None and "\n" not in problem and str(path) in problem
    for field in ("theme", "sampling.top_p", "top-p must be between 0 and 1", "sampling.temperature",
                  "sampling.top_k", "sampling.min_p", "sampling.stop", "compare[0]", "train.max_steps"):  # fmt: skip
        assert field in problem, field
    assert "future_key" not in problem and "unknown" not in problem  # unknown keys are ignored quietly
    assert (tmp_path / "settings.toml.bad").exists()
    assert load_settings(path) == (settings, None)  # the cleaned file loads without a problem


def test_unknown_keys_alone_are_no_problem(tmp_path: Path):
    path = tmp_path / "settings.toml"
    path.write_text("newer = 1\n[sampling]\ntemperature = 0.0\nfuture = true\n")
    assert load_settings(path) == (Settings(sampling={"temperature": 0.0}), None)
    assert not (tmp_path / "settings.toml.bad").exists()


def test_more_than_four_panes_are_cut(tmp_path: Path):
    path = tmp_path / "settings.toml"
    save_settings(Settings(compare=[{"model": f"m{i}", "mode": "raw"} for i in range(6)]), path)
    settings, problem = load_settings(path)
    assert len(settings.compare) == 4 and problem and "compare" in problem


def test_unreadable_place_never_raises(tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    settings, problem = load_settings(blocker / "settings.toml")
    assert settings == Settings() and problem and "\n" not in problem
    assert blocker.read_text() == "x"


def test_save_is_atomic_when_the_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "settings.toml"
    save_settings(GOOD, path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tuitune.settings.os.replace", broken_replace)
    with pytest.raises(TuituneError, match="No space left on device") as raised:
        save_settings(Settings(theme="other"), path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_save_is_atomic_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "settings.toml"
    save_settings(GOOD, path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("tuitune.settings.os.fsync", broken_fsync)
    with pytest.raises(TuituneError, match="Input/output error"):
        save_settings(Settings(theme="other"), path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_save_onto_a_folder_fails_cleanly(tmp_path: Path):
    target = tmp_path / "settings.toml"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(TuituneError):
        save_settings(GOOD, target)
    assert (target / "keep").read_text() == "mine"
    assert leftovers(tmp_path) == []


# -- parameter ranges ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("top_p", "9", "top-p must be between 0 and 1"),
        ("top_p", "-0.1", "top-p must be between 0 and 1"),
        ("temperature", "nan", "temperature must be between 0 and 5"),
        ("temperature", "inf", "temperature must be between 0 and 5"),
        ("temperature", "warm", "temperature must be between 0 and 5"),
        ("top_k", "1.5", "top-k must be an integer between 0 and 1000"),
        ("top_k", "1001", "top-k must be an integer between 0 and 1000"),
        ("min_p", "2", "min-p must be between 0 and 1"),
        ("repeat_penalty", "0.1", "repeat penalty must be between 0.5 and 2"),
        ("max_tokens", "0", "max tokens must be an integer between 1 and 32768"),
        ("max_tokens", "40000", "max tokens must be an integer between 1 and 32768"),
        ("seed", "-2", "seed must be an integer between -1 (random) and 2147483647"),
        ("seed", str(2**31), "seed must be an integer between -1 (random) and 2147483647"),
        ("n_ctx", "100", "context must be 0 (the model's default) or an integer between 256 and 131072"),
        ("n_ctx", "200000", "context must be 0 (the model's default) or an integer between 256 and 131072"),
    ],
)
def test_parse_field_refuses_out_of_range(name: str, text: str, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_field(name, text)


def test_parse_field_accepts_the_bounds():
    assert parse_field("top_p", " 1 ") == 1.0 and parse_field("temperature", "0") == 0.0
    assert parse_field("seed", "-1") == -1 and parse_field("seed", str(2**31 - 1)) == 2**31 - 1
    assert parse_field("n_ctx", "0") == 0 and parse_field("n_ctx", "4096") == 4096
    assert parse_field("repeat_penalty", "0.5") == 0.5 and parse_field("max_tokens", "32768") == 32768
    with pytest.raises(ValueError):
        check_value("top_k", True)  # a TOML boolean is not a number
    with pytest.raises(ValueError):
        check_value("min_p", math.nan)


# -- the app ----------------------------------------------------------------------------------------
pilot = pytest.mark.anyio


@pilot
async def test_theme_survives_a_relaunch(tmp_path: Path, tuitune_dirs):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        assert app.theme != "nord"
        app.theme = "nord"
        await driver.pause()
    assert load_settings()[0].theme == "nord"
    again, _ = scripted_app(tmp_path)
    async with again.run_test(size=(120, 40)) as driver:
        await driver.pause()
        assert again.theme == "nord"


@pilot
async def test_unknown_saved_theme_is_ignored(tmp_path: Path):
    save_settings(Settings(theme="no-such-theme"))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        await driver.pause()
        assert app.theme != "no-such-theme"
    assert load_settings()[0].theme == "no-such-theme"  # not overwritten just by starting


@pilot
async def test_corrupt_settings_are_reported_once_and_the_app_starts(tmp_path: Path, tuitune_dirs):
    path = tuitune_dirs["config"] / "settings.toml"
    path.parent.mkdir(parents=True)
    path.write_text("theme = [unclosed\n")
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        await driver.pause()
        messages = [note.message for note in app._notifications]
        about = [m for m in messages if "settings.toml" in m]
        assert len(about) == 1 and "replaced" in about[0] and "\n" not in about[0]
        await type_and_send(driver, "still works")
        await wait_idle(driver, app)
        assert all(pane.turns for pane in app.screen.panes)
    assert (path.parent / "settings.toml.bad").read_text() == "theme = [unclosed\n"


@pilot
async def test_a_failing_save_is_one_notification(tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    app, _ = scripted_app(tmp_path, settings_path=blocker / "settings.toml")
    async with app.run_test(size=(120, 40)) as driver:
        await driver.pause()
        app.update_settings(theme="nord")
        app.update_settings(theme="gruvbox")
        await driver.pause()
        assert app.settings.theme == "gruvbox"  # kept for this session all the same
        failures = [note.message for note in app._notifications if note.message.startswith("settings not saved")]
        assert len(failures) == 1  # Compare saving its layout at start, then two theme changes: one notice


@pilot
async def test_saved_compare_layout_opens_when_every_model_is_known(tmp_path: Path):
    layout = [{"model": "smollm2-135m-instruct", "mode": "raw"}, {"model": "gemma-3-270m", "mode": "raw"},
              {"model": "smollm2-135m-instruct", "mode": "chat"}]  # fmt: skip
    save_settings(Settings(compare=layout))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        await driver.pause()
        assert [(p.settings.model, p.settings.mode) for p in app.screen.panes] == [
            (pane["model"], pane["mode"]) for pane in layout
        ]


@pilot
async def test_saved_compare_layout_with_an_unknown_model_falls_back_to_the_demo_pair(tmp_path: Path):
    save_settings(Settings(compare=[{"model": "deleted-model", "mode": "chat"}]))
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        await driver.pause()
        assert [p.settings.model for p in app.screen.panes] == ["gemma-3-270m", "smollm2-135m-instruct"]


@pilot
async def test_train_form_survives_a_relaunch(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        await driver.press("f10")
        await driver.pause()
        field = app.screen.query_one("#train-lr", Input)
        field.focus()
        field.value = "5e-4"
        app.screen.query_one("#train-name", Input).value = "remembered-run"
        await driver.press("tab")  # leaving a field saves the form
        await driver.pause()
    saved = load_settings()[0].train
    assert saved["lr"] == "5e-4" and saved["name"] == "remembered-run"
    again, _ = scripted_app(tmp_path)
    async with again.run_test(size=(120, 40)) as driver:
        await driver.press("f10")
        await driver.pause()
        assert again.screen.query_one("#train-lr", Input).value == "5e-4"
        assert again.screen.query_one("#train-name", Input).value == "remembered-run"


@pilot
async def test_top_p_9_is_refused_inline_and_not_applied(tmp_path: Path):
    app, models = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        await driver.press("ctrl+o")
        await driver.pause()
        panel = app.screen.query_one(ParamsPanel)
        field = panel.query_one("#param-top_p", Input)
        field.value = "9"
        await driver.pause()
        error = panel.query_one("#param-top_p-error", Label)
        assert error.display and "top-p must be between 0 and 1" in str(error.render())
        assert field.has_class("invalid")
        assert panel.errors() == {"top_p": "top-p must be between 0 and 1"}
        assert app.screen.sampling.top_p == 0.95 and panel.sampling.top_p == 0.95
        field.value = "0.5"
        await driver.pause()
        assert not error.display and not field.has_class("invalid") and panel.errors() == {}
        assert app.screen.sampling.top_p == 0.5
        await driver.press("ctrl+o")
        await type_and_send(driver, "hi")
        await wait_idle(driver, app)
        assert all(engine.requests[0].sampling.top_p == 0.5 for engine in models.engines.values())


@pilot
async def test_nan_and_context_fields(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        await driver.press("ctrl+o")
        await driver.pause()
        panel = app.screen.query_one(ParamsPanel)
        panel.query_one("#param-temperature", Input).value = "nan"
        panel.query_one("#param-n_ctx", Input).value = "100"
        await driver.pause()
        assert set(panel.errors()) == {"temperature", "n_ctx"}
        assert "context must be 0" in str(panel.query_one("#param-n_ctx-error", Label).render())
        assert app.screen.sampling.temperature == 0.7 and app.screen.n_ctx == 0
        panel.query_one("#param-n_ctx", Input).value = "4096"
        await driver.pause()
        assert app.screen.n_ctx == 4096 and set(panel.errors()) == {"temperature"}


@pilot
async def test_pane_params_refuses_top_p_9_with_the_error_shown(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        app.screen.panes[0].action_pane_params()  # the pane's own key for this is another test's business
        await driver.pause()
        await driver.click("#pane-top_p")
        await driver.press("9", "enter")
        await driver.pause()
        dialog = app.screen
        assert isinstance(dialog, PaneParams)  # not dismissed
        assert "top-p must be between 0 and 1" in str(dialog.query_one("#pane-error", Label).render())
        assert dialog.query_one("#pane-top_p", Input).has_class("invalid")
        await driver.click("#apply")
        await driver.pause()
        assert isinstance(app.screen, PaneParams)
        await driver.press("backspace", "0", ".", "5", "enter")
        await driver.pause()
        assert not isinstance(app.screen, PaneParams)
        assert app.screen.panes[0].settings.overrides == {"top_p": 0.5}


def test_no_temporary_files_after_many_saves(tmp_path: Path):
    path = tmp_path / "settings.toml"
    for index in range(5):
        save_settings(Settings(theme=f"t{index}"), path)
    assert leftovers(tmp_path) == [] and load_settings(path)[0].theme == "t4"
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0  # private like the folder


@pilot
async def test_shared_parameters_and_the_compare_layout_survive_a_relaunch(tmp_path: Path):
    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 40)) as driver:
        await driver.press("ctrl+o")
        app.screen.query_one("#param-temperature").value = "0"
        app.screen.query_one("#param-n_ctx").value = "2048"
        app.screen.query_one("#param-system").value = "Be brief."
        await driver.pause()
        await driver.press("ctrl+t")  # a third pane
        await driver.pause()
        app.screen.panes[0].focus()
        await driver.press("alt+m")  # pane A: raw → chat
        await driver.pause()
        layout = [(p.settings.model, p.settings.mode) for p in app.screen.panes]
    again, models = scripted_app(tmp_path)
    async with again.run_test(size=(120, 40)) as driver:
        await driver.pause()
        screen = again.screen
        assert [(p.settings.model, p.settings.mode) for p in screen.panes] == layout
        assert layout[0] == ("gemma-3-270m", "chat") and len(layout) == 3
        assert (screen.sampling.temperature, screen.n_ctx, screen.system) == (0.0, 2048, "Be brief.")
        await driver.press("ctrl+o")
        assert screen.query_one("#param-temperature").value == "0.0"
        box = screen.query_one("#prompt")
        box.text = "hi"
        box.focus()
        await driver.press("enter")
        await driver.pause(0.5)
        assert models.engines["smollm2-135m-instruct"].requests[0].sampling.temperature == 0.0
        assert models.engines["smollm2-135m-instruct"].n_ctx == 2048
