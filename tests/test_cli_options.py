"""Every command's options come from its typed config: one flag per field (dotted flags for config sections),
the field's docstring as help, choices listed, switches one-way, near-miss hints, and a `--help` that imports
nothing heavy."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from asymvae.cli import build_parser
from asymvae.commands.configs import ConfigsOptions
from asymvae.commands.infer import InferOptions
from asymvae.commands.options import add_options, from_args, section_values
from asymvae.commands.pipeline import CompileOptions, RunLocalOptions, ScheduleOptions, SubmitOptions
from asymvae.commands.prepare import PrepareOptions
from asymvae.commands.train import TrainOptions
from asymvae.config import ConfigError, field_docs
from asymvae.data.config import PrepareConfig
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
        if dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name]):
            continue  # a config section: its dotted flags are checked below
        if f.name == "progress":  # EvalConfig's, a flag like any other
            assert "--no-progress" in helps
        assert f.name in dests, f"{' '.join(path)}: no option for {cls.__name__}.{f.name}"
        assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
        assert _words(docs[f.name]).replace("%%", "%") in helps


def _leaves(cfg: object, section: str = "") -> list[tuple[str, str, object]]:
    """(key, docstring, default) of every leaf field of a nested config dataclass instance."""
    docs, hints, out = field_docs(type(cfg)), typing.get_type_hints(type(cfg)), []
    for f in dataclasses.fields(cfg):
        key = f"{section}.{f.name}" if section else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaves(getattr(cfg, f.name), key)
        else:
            out.append((key, docs[f.name], getattr(cfg, f.name)))
    return out


@pytest.mark.parametrize(
    "path, cfg, section", [(("train",), ExperimentConfig(), ""), (("prepare",), PrepareConfig(), "prepare")]
)
def test_every_config_key_is_a_dotted_flag_with_its_docstring(path, cfg, section) -> None:
    helps = _words(_subparser(path).format_help())
    leaves = _leaves(cfg, section)
    assert len(leaves) > 20
    for key, doc, _ in leaves:
        assert f" --{key.replace('_', '-')} " in helps, key
        assert _words(doc) in helps, key


def test_nested_defaults_are_the_parents_not_the_nested_class_own() -> None:
    """`PrepareConfig.eval_masks` is built by a factory with `full_mask_prob=0.0`; MaskConfig's own default is 0.5."""
    assert PrepareConfig().eval_masks.full_mask_prob == 0.0
    (action,) = [
        a for a in _subparser(("prepare",))._actions if "--prepare.eval-masks.full-mask-prob" in a.option_strings
    ]
    assert action.help.endswith("(default: 0.0)")
    args = _subparser(("prepare",)).parse_args(["src", "--out", "o", "--prepare.max_side", "512"])
    opts = from_args(PrepareOptions, args)
    assert (opts.prepare.max_side, opts.prepare.eval_masks.full_mask_prob) == (512, 0.0)


def test_section_flags_change_only_what_is_given() -> None:
    argv = ["demo", "--train.max-steps", "5", "--optim.betas", "[0.8,0.9]", "--train.ema", "--data.hflip=false"]
    args = _subparser(("train",)).parse_args([*argv, "--loss.lpips.net", "alex"])
    assert section_values(args) == {
        "train.max_steps": 5, "optim.betas": (0.8, 0.9), "train.ema": True, "data.hflip": False,
        "loss.lpips.net": "alex",
    }  # fmt: skip
    assert section_values(_subparser(("train",)).parse_args(["demo"])) == {}


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
    add_options(parser, InferOptions, positional=("url",))
    assert from_args(InferOptions, parser.parse_args(["http://x"])).header == []
    opts = from_args(InferOptions, parser.parse_args(["http://x", "--header", "A:1", "--header", "B:2"]))
    assert opts.header == ["A:1", "B:2"]


def _option_strings(path: tuple[str, ...]) -> set[str]:
    return {s for a in _subparser(path)._actions for s in a.option_strings}


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_switches_have_one_flag_that_changes_something(path: tuple[str, ...]) -> None:
    """Off by default: only `--flag`; on by default: only `--no-flag`; never both."""
    cls, flags = COMMANDS[path], _option_strings(path)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if hints[f.name] is bool:
            name = f.name.replace("_", "-")
            on, off = f"--{name}" in flags, f"--no-{name}" in flags
            assert (on, off) == ((False, True) if f.default else (True, False)), f.name
    assert not any(flag.startswith("--no-") and flag[5:] in {g[2:] for g in flags} for flag in flags)


@pytest.mark.parametrize(
    "argv, listed",
    [
        (["export", "m", "--out", "o", "--format", "onx"], "{diffusers,onnx,triton}"),
        (["eval", "m", "--data", "d", "--baseline", "b", "--lpips", "standrd"], "{shift_tolerant,standard,off}"),
        (["inpaint", "--vae", "v", "--pipeline", "p", "--image", "i", "--mask", "m", "--prompt", "x", "--out", "o",
          "--compile", "max-autotun"], "max-autotune-no-cudagraphs"),
        (["train", "demo", "--train.mixed-precision", "fp8"], "{no,bf16,fp16}"),
        (["pipeline", "run-local", "--runner", "dokker"], "{subprocess,docker}"),
        (["serve", "m", "--device", "tpu"], "{auto,cpu,cuda}"),
    ],
)  # fmt: skip
def test_choices_are_listed_and_checked(argv, listed, capsys) -> None:
    path = tuple(a for a in argv[:2] if a in ("export", "eval", "inpaint", "train", "serve", "pipeline", "run-local"))
    assert listed in _words(_subparser(path).format_help())
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2 and "is not one of" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["train", "demo", "--max-steps", "5"], "usage: asymvae train"),
        (["train", "demo", "--max-steps", "5"], "did you mean --train.max-steps?"),
        (["prepare", "s", "--out", "o", "--max_side=5"], "did you mean --prepare.max-side?"),
        (["export", "m", "--out", "o", "--format", "onnx", "--opsett", "17"], "did you mean --opset?"),
        (["pipeline", "submit", "--host", "h", "--image", "i", "--pipeline.node", "2"],
         "did you mean --pipeline.nodes?"),
    ],
)  # fmt: skip
def test_a_near_miss_option_gets_the_subcommands_usage_and_a_hint(argv, hint, capsys) -> None:
    from asymvae.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and hint in capsys.readouterr().err


def test_version_is_the_installed_package_version(capsys) -> None:
    import importlib.metadata

    from asymvae.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"asymvae {importlib.metadata.version('asymvae')}"


HEAVY = ("torch", "diffusers", "datasets", "accelerate", "transformers", "kfp", "numpy", "PIL", "lpips", "minio")
"""Modules that take seconds (or pull in those that do): none may load to print `--help`."""

_HELP_IMPORTS = """
import json, sys
from asymvae.cli import main
try:
    main(sys.argv[1:] + ["--help"])
except SystemExit:
    pass
print(json.dumps(sorted(m.partition(".")[0] for m in sys.modules)))
"""


@pytest.mark.parametrize("path", [(), *COMMANDS, ("pipeline",)], ids=lambda p: " ".join(p) or "asymvae")
def test_help_imports_nothing_heavy(path: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, "-c", _HELP_IMPORTS, *path], capture_output=True, text=True, check=True)
    *_, loaded = done.stdout.splitlines()
    assert "usage: asymvae" in done.stdout
    assert not set(HEAVY) & set(json.loads(loaded)), f"asymvae {' '.join(path)} --help imported heavy modules"


def test_inpaint_help_names_every_pipeline_kind() -> None:
    from asymvae.inpaint import KINDS

    helps = _words(_subparser(("inpaint",)).format_help())
    for name in KINDS:
        assert name in helps, f"asymvae inpaint --help does not name {name}"
