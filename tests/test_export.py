"""`asymvae export`: diffusers folder, ONNX parity, Triton repository, model card, atomicity, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from diffusers import AsymmetricAutoencoderKL

from asymvae.cli import main
from asymvae.evaluation.report import write_report
from asymvae.export import ExportError
from asymvae.export import run as export_run
from asymvae.export.config import ExportConfig
from asymvae.export.evaluation import parse_evaluation
from asymvae.export.onnx import INPUT_NAMES, export_onnx, verify_onnx
from asymvae.export.run import export_model
from asymvae.export.triton import validate_triton_model


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _eval_json(tmp_path):
    side = {"psnr": 20.0, "pre_error": 0.004}
    summary = {
        "masked": {"baseline": side, "asymmetric": {"psnr": 21.0, "pre_error": 0.001}},
        "full_mask": {"baseline": {"psnr": 20.0}, "asymmetric": {"psnr": 20.1}},
        "images": 2,
        "data": "builtin:demo",
        "resolution": 32,
        "mask_seed": 1,
        "mean_hole_share": 0.3,
        "latents": "baseline encoder, posterior mode",
        "pre_error_ratio": 0.25,
    }
    return write_report(tmp_path / "eval", summary, [], [])["json"]


def test_diffusers_export_loads_and_carries_a_card(asym_export_dir, base_vae_dir, tmp_path):
    out = tmp_path / "hf"
    result = export_model(ExportConfig(str(asym_export_dir), "diffusers", str(out), eval=str(_eval_json(tmp_path))))
    assert result.path == out
    loaded = AsymmetricAutoencoderKL.from_pretrained(out, subfolder="vae")
    original = AsymmetricAutoencoderKL.from_pretrained(asym_export_dir, subfolder="vae")
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").is_file() and (out / "config.yaml").is_file()
    card = (out / "README.md").read_text()
    assert f"- base model: `{base_vae_dir}` (subfolder `vae`)" in card
    for text in ("## Model", "mask branch", "## Training config", "kind: asymmetric", "data fingerprint: not"):
        assert text in card, text
    assert "| masked | pre_error: MSE ↓ | preserved | 4.000e-03 | 1.000e-03 |" in card
    # the deploy gate's input: the score and the identity of the held-out evaluation, machine-readable
    scored = parse_evaluation((out / "evaluation.json").read_text(), "evaluation.json")
    assert (scored.pre_error, scored.baseline_pre_error, scored.ratio) == (0.001, 0.004, 0.25)
    assert scored.held_out == {"data": "builtin:demo", "split": None, "images": 2, "resolution": 32, "mask_seed": 1,
                               "latents": "baseline encoder, posterior mode", "decoding": None}  # fmt: skip
    assert "evaluation.json" in result.files and "`evaluation.json`" in card
    assert _leftovers(tmp_path) == []


def test_onnx_matches_pytorch_at_two_shapes_and_takes_scaled_latents(asym_export_dir, tmp_path):
    vae = AsymmetricAutoencoderKL.from_pretrained(asym_export_dir, subfolder="vae").eval()
    path = export_onnx(vae, tmp_path / "m.onnx")
    checks = verify_onnx(vae, path, shapes=((1, 4, 4), (3, 6, 10)))
    assert [(c.batch, c.latent_height, c.latent_width) for c in checks] == [(1, 4, 4), (3, 6, 10)]
    assert all(c.max_abs_error < 1e-4 and c.max_abs_value > 0.1 for c in checks)
    # The graph's latent is the scaled one: feeding z * scaling_factor reproduces vae.decode(z).
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 4, 5, 7, generator=g)
    image = torch.rand(2, 3, 40, 56, generator=g) * 2 - 1
    mask = torch.zeros(2, 1, 40, 56)
    mask[:, :, 8:24, 16:40] = 1
    with torch.no_grad():
        expected = vae.decode(z, image=image, mask=mask).sample.numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = dict(zip(INPUT_NAMES, (z * vae.config.scaling_factor, image, mask), strict=True))
    (got,) = session.run(["sample"], {k: v.numpy() for k, v in feeds.items()})
    assert np.abs(got - expected).max() < 1e-4
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["latent", "image", "mask"] and graph.output[0].name == "sample"
    assert [d.dim_param for d in graph.input[1].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]


def test_onnx_export_writes_a_parity_report(asym_export_dir, tmp_path):
    out = tmp_path / "onnx"
    result = export_model(ExportConfig(str(asym_export_dir), "onnx", str(out)))
    assert sorted(result.files) == ["README.md", "config.yaml", "export_report.json", "model.onnx"]
    report = json.loads((out / "export_report.json").read_text())["onnx_parity"]
    assert len(report) == 2 and all(r["max_abs_error"] < 1e-4 for r in report)
    card = (out / "README.md").read_text()
    assert "**scaled**" in card and "max abs error" in card and "Not evaluated" in card


def test_triton_repository_parses_as_triton_protobuf_and_matches_the_graph(asym_export_dir, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    root = tmp_path / "repo"
    (root / "other_model").mkdir(parents=True)  # a repository may hold other models: left alone
    export_model(
        ExportConfig(str(asym_export_dir), "triton", str(root), name="decoder", eval=str(_eval_json(tmp_path)))
    )
    assert sorted(p.name for p in root.iterdir()) == ["decoder", "other_model"]
    model = root / "decoder"
    assert (model / "1" / "model.onnx").is_file() and (model / "README.md").is_file()
    assert parse_evaluation((model / "evaluation.json").read_text(), "evaluation.json").pre_error == 0.001
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "decoder" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert config.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in config.input] == [
        ("latent", [4, -1, -1]),
        ("image", [3, -1, -1]),
        ("mask", [1, -1, -1]),
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("sample", [3, -1, -1])]
    assert validate_triton_model(model) == {"inputs": ["latent", "image", "mask"], "outputs": ["sample"]}
    # A config whose names drift from the graph is caught.
    (model / "config.pbtxt").write_text((model / "config.pbtxt").read_text().replace('"latent"', '"z"'))
    with pytest.raises(ValueError, match="do not match the graph"):
        validate_triton_model(model)


def test_a_failed_export_leaves_nothing_that_looks_complete(asym_export_dir, base_vae_dir, tmp_path, monkeypatch):
    # A plain VAE has no mask-conditioned decoder: refused after loading, before anything is published.
    with pytest.raises(ExportError, match="AsymmetricAutoencoderKL"):
        export_model(ExportConfig(str(base_vae_dir), "triton", str(tmp_path / "repo")))
    assert not (tmp_path / "repo" / "asymvae_decoder").exists() and _leftovers(tmp_path / "repo") == []

    # A failure after every file is written (here: while writing the card) removes the staging folder.
    def broken_card(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_run, "write_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        export_model(ExportConfig(str(asym_export_dir), "onnx", str(tmp_path / "onnx")))
    assert not (tmp_path / "onnx").exists() and _leftovers(tmp_path) == []
    monkeypatch.undo()

    # An existing export is never overwritten without --force.
    export_model(ExportConfig(str(asym_export_dir), "diffusers", str(tmp_path / "hf")))
    before = (tmp_path / "hf" / "README.md").read_text()
    with pytest.raises(ExportError, match="--force"):
        export_model(ExportConfig(str(asym_export_dir), "diffusers", str(tmp_path / "hf")))
    export_model(ExportConfig(str(asym_export_dir), "diffusers", str(tmp_path / "hf"), force=True))
    assert (tmp_path / "hf" / "README.md").read_text() == before and _leftovers(tmp_path) == []


def test_export_cli_exit_codes(asym_export_dir, tmp_path, capsys):
    def cli(*argv):
        with pytest.raises(SystemExit) as exc:
            main(["export", *argv])
        return exc.value.code, capsys.readouterr()

    code, out = cli(str(asym_export_dir), "--format", "safetensors", "--out", str(tmp_path / "x"))
    assert code == 2 and "diffusers, onnx, triton" in out.err and not (tmp_path / "x").exists()
    code, out = cli(str(tmp_path / "missing"), "--format", "onnx", "--out", str(tmp_path / "x"))
    assert code == 2 and "does not exist" in out.err and not (tmp_path / "x").exists()
    code, out = cli(str(asym_export_dir), "--format", "onnx", "--out", str(tmp_path / "x"), "--eval", "nope.json")
    assert code == 2 and "nope.json" in out.err and not (tmp_path / "x").exists()
    code, out = cli(str(asym_export_dir), "--format", "triton", "--out", str(tmp_path / "r"), "--name", "a/b")
    assert code == 2 and "--name" in out.err
    code, out = cli(str(asym_export_dir), "--format", "triton", "--out", str(tmp_path / "r"), "--name", "vae")
    assert code == 0 and "max abs error" in out.out and (tmp_path / "r" / "vae" / "config.pbtxt").is_file()


def test_the_card_of_a_model_trained_on_prepared_shards_names_their_source_and_fingerprint(base_vae_dir, tmp_path):
    """The config says `data.source: builtin:demo` (its default) even when shards are read; the card must give
    what the shards hold: the manifest's source and fingerprint, and the base model as loaded."""
    from asymvae.data.manifest import load_manifest
    from asymvae.data.prepare import PrepareConfig, prepare
    from asymvae.training.run import train
    from tests.support.tiny_models import tiny_config

    data = tmp_path / "data"
    prepare(
        "builtin:demo?count=8&size=48&seed=3",
        str(data),
        PrepareConfig(min_side=16, max_side=48, val_fraction=0.0, workers=1),
        progress=False,
    )
    manifest, _ = load_manifest(str(data))
    cfg = tiny_config(base_vae_dir, tmp_path / "run", f"data.shards={data}", "train.max_steps=2", "data.num_workers=0")
    run = train(cfg)
    out = tmp_path / "hf"
    export_model(ExportConfig(str(run.export), "diffusers", str(out)))
    card = (out / "README.md").read_text()
    assert f"- prepared dataset: `{data}` (made by `asymvae prepare`, 8 training samples)" in card
    assert f"- source: `{manifest.source['spec']}` ({manifest.source['description']}, 8 images)" in card
    assert manifest.source["spec"] == "builtin:demo?count=8&size=48&seed=3"
    assert f"- data fingerprint: `{manifest.fingerprint}` (the prepared dataset's manifest; of its source: " in card
    assert f"- base model: `{base_vae_dir}` (subfolder `vae`)" in card
    assert "- source: `builtin:demo`" not in card and "not recorded" not in card
    # The record travels with the export, so a second export from it says the same.
    assert (out / "provenance.json").is_file()
    export_model(ExportConfig(str(out), "onnx", str(tmp_path / "onnx")))
    assert f"`{manifest.fingerprint}`" in (tmp_path / "onnx" / "README.md").read_text()


def test_the_card_of_a_preset_base_names_the_folder_it_was_loaded_from(asym_export_dir, tmp_path):
    from asymvae.export.card import CardInfo, model_card

    vae = AsymmetricAutoencoderKL.from_pretrained(asym_export_dir, subfolder="vae")
    config = {"model": {"pretrained": "preset:demo_base"}, "data": {"source": "/data/mine", "resolution": 64}}
    record = {
        "base_model": "/runs/demo_base/step600/vae",
        "data": {"fingerprint": "f1", "source": {"spec": "/data/mine"}},
    }
    card = model_card(vae, CardInfo("n", "diffusers", "somewhere", run_config=config, provenance=record))
    assert "- base model: `/runs/demo_base/step600/vae` (`model.pretrained: preset:demo_base`)" in card
    assert "- source: `/data/mine`" in card and "- data fingerprint: `f1` (of the source as read)" in card
    assert "- training crops: 64²" in card
    # An export without a record: what the config says, and that the fingerprint was not recorded.
    card = model_card(vae, CardInfo("n", "diffusers", "somewhere", run_config=config))
    assert "- base model: `preset:demo_base`" in card and "- data fingerprint: not recorded" in card


def test_a_plain_autoencoderkl_is_described_as_what_it_is(tmp_path):
    from diffusers import AutoencoderKL

    from asymvae.config import to_dict
    from asymvae.model.config import ModelConfig
    from asymvae.training.experiment import ExperimentConfig
    from tests.support.tiny_models import make_base_vae

    model = tmp_path / "step6"
    make_base_vae().save_pretrained(model / "vae")
    cfg = ExperimentConfig(name="plain", model=ModelConfig(kind="autoencoderkl", pretrained=None))
    (model / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    export_model(ExportConfig(str(model), "diffusers", str(tmp_path / "hf")))
    card = (tmp_path / "hf" / "README.md").read_text()
    AutoencoderKL.from_pretrained(tmp_path / "hf", subfolder="vae")
    assert "A plain VAE (`AutoencoderKL`), trained with asymvae" in card and "no mask branch" in card
    assert "- base model: none: trained from scratch" in card
    for asymmetric_only in ("image=", "mask branch ", "An asymmetric", "asymvae inpaint", "Not evaluated"):
        assert asymmetric_only not in card, asymmetric_only


@pytest.mark.integration  # two ONNX and Triton exports
@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_exports_of_a_16_channel_family_apply_its_latent_transform_and_say_how_to_use_them(family, tmp_path):
    from asymvae.model.build import asymmetric_from_base
    from asymvae.model.config import ModelConfig
    from asymvae.model.family import FAMILIES
    from tests.support.tiny_models import family_base

    fam = FAMILIES[family]
    vae = asymmetric_from_base(family_base(family), ModelConfig(pretrained="unused", decoder="base")).eval()
    vae.save_pretrained(tmp_path / "model" / "vae")
    result = export_model(ExportConfig(str(tmp_path / "model"), "onnx", str(tmp_path / "onnx")))
    assert all(c["max_abs_error"] < 1e-4 for c in result.onnx_checks)
    # The graph takes the latent as the transformer produces it: (z - shift) * scaling decodes like vae.decode(z).
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 16, 4, 6, generator=g)
    image = torch.rand(1, 3, 32, 48, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, 32, 48)
    mask[..., 8:24, 8:40] = 1
    with torch.no_grad():
        expected = vae.decode(z, image=image, mask=mask).sample.numpy()
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    latent = (z - fam.shift_factor) * fam.scaling_factor
    (got,) = session.run(["sample"], {"latent": latent.numpy(), "image": image.numpy(), "mask": mask.numpy()})
    assert np.abs(got - expected).max() < 1e-4
    card = (tmp_path / "onnx" / "README.md").read_text()
    assert f"the graph computes `latent / {fam.scaling_factor} + {fam.shift_factor}` itself" in card
    assert f"- family: {fam.title} (`{family}`)" in card

    export_model(ExportConfig(str(tmp_path / "model"), "diffusers", str(tmp_path / "hf")))
    card = (tmp_path / "hf" / "README.md").read_text()
    assert f"shift_factor={fam.shift_factor}" in card and "force_upcast=True" in card
    assert "do **not** pass image and mask" in card and "asymvae inpaint --vae" in card
    assert ("diffusers#13611" in card) == (family == "sd3")
    loaded = AsymmetricAutoencoderKL.from_pretrained(tmp_path / "hf", subfolder="vae")
    assert (loaded.config.shift_factor, loaded.config.force_upcast) == (fam.shift_factor, True)


def test_an_export_onto_the_folder_it_runs_in_is_one_line(asym_export_dir, tmp_path, monkeypatch, capsys):
    """`--out .` (or a folder above) cannot be replaced as a whole: one line naming the fix, even when the folder
    is an earlier export (it holds asymvae's marker), and nothing is written."""
    from asymvae.storage.local import WRITTEN_BY

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / WRITTEN_BY).write_text("")
    monkeypatch.chdir(earlier)
    for out, why in ((".", "the folder you are in, or above it"), ("..", "was not written by asymvae")):
        with pytest.raises(SystemExit) as stopped:
            main(["export", str(asym_export_dir), "--format", "diffusers", "--out", out, "--force"])
        assert stopped.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0] and "Fix:" in err[0]
    assert sorted(p.name for p in earlier.iterdir()) == [WRITTEN_BY]


def test_a_source_read_directly_is_recorded_with_its_own_fingerprint():
    from asymvae.data.config import DataConfig
    from asymvae.data.dataset import TrainImages
    from asymvae.data.provenance import data_record
    from asymvae.data.sources import open_source
    from asymvae.masks import MaskConfig

    def record(spec: str) -> dict:
        return data_record(TrainImages(open_source(spec), [0, 1, 3], DataConfig(source=spec), MaskConfig(), 0))

    one = record("builtin:demo?count=4&size=48")
    assert one["source"]["spec"] == "builtin:demo?count=4&size=48" and one["source"]["images"] == 4
    assert one["train_samples"] == 3 and "shards" not in one
    assert one["fingerprint"] == one["source"]["fingerprint"] == record("builtin:demo?count=4&size=48")["fingerprint"]
    assert record("builtin:demo?count=5&size=48")["fingerprint"] != one["fingerprint"]
