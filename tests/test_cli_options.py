"""Every command's options come from its typed config: one flag per field, the field's docstring as help."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from asymvae.cli import build_parser
from asymvae.commands.configs import ConfigsOptions
from asymvae.commands.infer import InferOptions
from asymvae.commands.options import add_options, from_args
from asymvae.commands.pipeline import CompileOptions, RunLocalOptions, ScheduleOptions, SubmitOptions
from asymvae.commands.prepare import PrepareOptions
from asymvae.commands.train import TrainOptions
from asymvae.config import ConfigError, field_docs
from asymvae.data.prepare import PrepareConfig
from asymvae.evaluation.config import EvalConfig
from asymvae.export.config import ExportConfig
from asymvae.inpaint.options import InpaintOptions
from asymvae.serving.config import ServeConfig
from asymvae.training.experiment import ExperimentConfig

COMMANDS = {
    ("train",): TrainOptions,
    ("configs",): ConfigsOptions,
    ("prepare",): PrepareOptions,
    ("eval",): EvalConfig,
    ("export",): ExportConfig,
    ("infer",): InferOptions,
    ("serve",): ServeConfig,
    ("inpaint",): InpaintOptions,
    ("pipeline", "compile"): CompileOptions,
    ("pipeline", "run-local"): RunLocalOptions,
    ("pipeline", "submit"): SubmitOptions,
    ("pipeline", "schedule"): ScheduleOptions,
}


def _subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[name]
    return parser


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(autouse=True)
def _wide_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse wraps help to the terminal width, breaking words at hyphens: no wrapping here."""
    monkeypatch.setenv("COLUMNS", "1000")


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_each_field_is_an_option_with_its_docstring(path: tuple[str, ...]) -> None:
    cls = COMMANDS[path]
    sub = _subparser(path)
    dests = {a.dest for a in sub._actions}
    helps = _words(sub.format_help())
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name == "progress":  # EvalConfig's, a flag like any other
            assert "--no-progress" in helps
        assert f.name in dests, f"{' '.join(path)}: no option for {cls.__name__}.{f.name}"
        assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
        assert _words(docs[f.name]).replace("%%", "%") in helps


def _leaves(cls: type, section: str = "") -> list[tuple[str, str]]:
    """(key, docstring) of every leaf field of a nested config dataclass."""
    docs, hints, out = field_docs(cls), typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        key = f"{section}.{f.name}" if section else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaves(hints[f.name], key)
        else:
            out.append((key, docs[f.name]))
    return out


@pytest.mark.parametrize(
    "path, cls, section", [(("train",), ExperimentConfig, ""), (("prepare",), PrepareConfig, "prepare")]
)
def test_every_set_key_is_listed_with_its_docstring(path, cls, section) -> None:
    helps = _words(_subparser(path).format_help())
    leaves = _leaves(cls, section)
    assert len(leaves) > 20
    for key, doc in leaves:
        assert f" {key} (" in helps, key
        assert _words(doc) in helps, key


def test_values_are_typed_and_checked_like_a_config_file() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, EvalConfig, positional=("model",))
    args = parser.parse_args(["m", "--data", "d", "--baseline", "b", "--max-images", "5", "--no-progress"])
    cfg = from_args(EvalConfig, args)
    assert (cfg.max_images, cfg.progress, cfg.resolution, cfg.out) == (5, False, 256, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "--data", "d", "--baseline", "b", "--resolution", "big"])
    args = parser.parse_args(["m", "--data", "d", "--baseline", "b", "--resolution", "30"])
    with pytest.raises(ConfigError, match="multiple of 8"):  # the dataclass's own check, as a user error
        from_args(EvalConfig, args)


def test_text_fields_keep_what_was_typed() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, ExportConfig, positional=("model",))
    cfg = from_args(ExportConfig, parser.parse_args(["007", "--format", "onnx", "--out", "1e3", "--name", "2"]))
    assert (cfg.model, cfg.out, cfg.name) == ("007", "1e3", "2")


def test_repeated_flags_collect_and_default_to_empty() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, TrainOptions, positional=("config",))
    assert from_args(TrainOptions, parser.parse_args(["demo"])).set == []
    opts = from_args(TrainOptions, parser.parse_args(["demo", "--set", "a.b=1", "--set", "c=2", "--resume"]))
    assert opts.set == ["a.b=1", "c=2"] and opts.resume is True


def test_inpaint_help_names_every_pipeline_kind() -> None:
    from asymvae.inpaint import KINDS

    helps = _words(_subparser(("inpaint",)).format_help())
    for name in KINDS:
        assert name in helps, f"asymvae inpaint --help does not name {name}"
