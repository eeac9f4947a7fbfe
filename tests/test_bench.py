"""Export to plain open_clip and clip_benchmark as the evaluation backend (`compt export`, `compt eval --benchmark`).

The agreement test writes small datasets in clip_benchmark's wds layout, runs the real clip_benchmark on a
test-size run through `compt eval --benchmark`, and checks its numbers against compt's own zero-shot and
retrieval code on the same images.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compt import chain as chain_mod
from compt.checkpoint import load_checkpoint, save_checkpoint
from compt.cli import main
from compt.clip.bench import BenchmarkConfig, clip_benchmark_args, compat, dataset_folder, resolve_task
from compt.clip.bench.table import load_benchmark
from compt.clip.bench.wds import write_classification, write_retrieval
from compt.clip.data.images import TensorImages, resize_center_crop
from compt.clip.data.text import tokenize
from compt.clip.evaluation import EvalSuite, RetrievalSet, ZeroShotTask, evaluate
from compt.clip.models import create_model, get_model_config
from compt.config import config_from_dict
from compt.errors import UserError
from compt.export import export_checkpoint, run_members
from compt.report import write_report

RAW = {"name": "b", "baseline_epochs": 2, "baselines": True,
       "data": {"kind": "synthetic", "num_samples": 48, "eval_samples": 24, "captions_per_image": 1},
       "train": {"batch_size": 16, "warmup_steps": 2, "stage_warmup_steps": 1, "lr": 2e-3},
       "chain": [{"model": "test/A", "epochs": 2},
                 {"model": "test/B", "epochs": 1, "growth": "preserve", "distill": "fd"}]}
CLASSES = ("red square", "green circle", "blue stripes", "yellow cross")
TEMPLATES = ("a photo of a {c}.", "a drawing of a {c}.")

# Loads exported folders with open_clip alone: compt is made unimportable, whatever the venv holds.
PLAIN_OPEN_CLIP = """
import sys
sys.modules["compt"] = None
import open_clip, torch
out = {}
for folder in sys.argv[1:]:
    x = torch.load(folder + "/in.pt", weights_only=True)
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder + "/oc")
    tokenizer = open_clip.get_tokenizer("local-dir:" + folder + "/oc")
    model.eval()
    with torch.no_grad():
        out[folder] = {"image": model.encode_image(x["image"]), "text": model.encode_text(tokenizer(x["texts"])),
                       "tokens": tokenizer(x["texts"])}
torch.save(out, sys.argv[1] + "/out.pt")
"""


def _image(label: int, i: int, rng: np.random.Generator, size: tuple[int, int] = (24, 20)) -> Image.Image:
    """A class-coloured, non-square RGB image with noise (exercises clip_benchmark's resize + crop)."""
    base = np.array([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)][label], dtype=np.float64)
    arr = base + rng.normal(0, 40, (size[1], size[0], 3)) + 10 * (i % 3)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    chain_mod.train_run(config_from_dict(RAW), d, baselines=True, progress=False)
    return d


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> tuple[Path, dict]:
    """A classification (wds/toy_cls, test + train) and a retrieval (wds/toy_ret) dataset, and what they hold."""
    root, rng = tmp_path_factory.mktemp("datasets"), np.random.default_rng(0)
    labels = [i % 4 for i in range(20)]
    images = [_image(y, i, rng) for i, y in enumerate(labels)]
    write_classification(root / "toy_cls", "test", images, labels, CLASSES, TEMPLATES)
    write_classification(root / "toy_cls", "train", images[:8], labels[:8], CLASSES, TEMPLATES)
    ret_images = [_image(i % 4, i, rng) for i in range(10)]
    captions = [[f"a {CLASSES[i % 4]} number {i}", f"picture {i} of a {CLASSES[i % 4]}"] for i in range(10)]
    write_retrieval(root / "toy_ret", "test", ret_images, captions)
    return root, {"images": images, "labels": labels, "ret_images": ret_images, "captions": captions}


def test_run_members_and_export_layout(run_dir: Path, tmp_path: Path, capsys) -> None:
    members = run_members(run_dir)
    assert [(m.key, m.methods) for m in members] == [("chain/01-test_A", ("chain", "individual")),
                                                     ("chain/02-test_B", ("chain",)),
                                                     ("baselines/test_B", ("individual",))]
    assert main(["export", str(run_dir), "--out", str(tmp_path / "x")]) == 0
    printed = capsys.readouterr().out.splitlines()   # a line per member, then how open_clip loads them
    assert f"local-dir:{tmp_path / 'x' / members[0].key}" in printed[0]
    assert printed[-1].startswith("load with: open_clip.create_model_and_transforms('local-dir:FOLDER')")
    index = json.loads((tmp_path / "x/members.json").read_text())
    assert [m["key"] for m in index["members"]] == [m.key for m in members]
    for m in members:
        folder = tmp_path / "x" / m.key
        assert {p.name for p in folder.iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors",
                                                      "compt_member.json"}
        cfg = json.loads((folder / "open_clip_config.json").read_text())
        assert cfg["model_cfg"] == get_model_config(m.model).to_open_clip()


def test_export_loads_in_plain_open_clip_with_same_embeddings(tmp_path: Path) -> None:
    """A paper/ViT-S-16-shaped and a tiny/ member, exported, give compt's embeddings in plain open_clip."""
    texts, nets = ["a photo of a dog.", "a red square"], {}
    for model in ("paper/ViT-S-16", "tiny/ViT-C"):
        cfg, d = get_model_config(model), tmp_path / model.replace("/", "_")
        torch.manual_seed(0)
        nets[str(d)] = (cfg, create_model(cfg).eval())
        save_checkpoint(d / "final.pt", state_dict=nets[str(d)][1].state_dict(), model_config=cfg)
        assert main(["export", str(d / "final.pt"), "--out", str(d / "oc")]) == 0
        torch.save({"image": torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size), "texts": texts},
                   d / "in.pt")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", PLAIN_OPEN_CLIP, *nets], check=True, env=env, cwd=tmp_path)
    got = torch.load(next(iter(nets)) + "/out.pt", weights_only=True)
    for folder, (cfg, net) in nets.items():
        image = torch.load(folder + "/in.pt", weights_only=True)["image"]
        tokens = tokenize(texts, cfg.text.context_length)
        assert torch.equal(got[folder]["tokens"], tokens)
        with torch.no_grad():
            torch.testing.assert_close(got[folder]["image"], net.encode_image(image), rtol=0, atol=1e-5)
            torch.testing.assert_close(got[folder]["text"], net.encode_text(tokens), rtol=0, atol=1e-5)


def test_export_refuses_swin_and_plain_checkpoints_without_model(tmp_path: Path) -> None:
    cfg = get_model_config("test/Swin-A")
    save_checkpoint(tmp_path / "s.pt", state_dict=create_model(cfg).state_dict(), model_config=cfg)
    with pytest.raises(UserError, match="Swin"):
        export_checkpoint(tmp_path / "s.pt", tmp_path / "s")
    torch.save(create_model("test/A").state_dict(), tmp_path / "plain.pt")
    with pytest.raises(UserError, match="--model"):
        export_checkpoint(tmp_path / "plain.pt", tmp_path / "p")
    assert (export_checkpoint(tmp_path / "plain.pt", tmp_path / "p", model_name="test/A") / "open_clip_config.json"
            ).is_file()
    with pytest.raises(UserError, match="do not fit model test/B"):
        export_checkpoint(tmp_path / "plain.pt", tmp_path / "q", model_name="test/B")


def test_compat_accuracy_matches_compt_topk() -> None:
    from compt.clip.evaluation import topk_accuracy

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    ours = topk_accuracy(logits, labels, (1, 5))
    assert [100 * a for a in compat.accuracy(logits, labels, topk=(1, 5))] == pytest.approx([ours[1], ours[5]])
    # clip_benchmark 1.6.2's own accuracy fails exactly when NumPy refuses float() of a shape-(1,) array
    try:
        float(np.ones(1))
        refuses = False
    except TypeError:
        refuses = True
    assert compat.needs_fix() == refuses


def test_task_resolution_and_arguments(data_root: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = data_root
    assert dataset_folder("wds/toy_cls", str(root)) == root / "toy_cls"
    assert dataset_folder("wds/vtab/cifar10", str(root / "wds_{dataset_cleaned}")) == root / "wds_vtab-cifar10"
    assert resolve_task("wds/toy_ret", str(root), "auto") == "zeroshot_retrieval"
    assert resolve_task("wds/toy_cls", str(root), "auto") == "zeroshot_classification"
    assert resolve_task("cifar10", str(root), "auto") == "auto"
    cfg = BenchmarkConfig(datasets=("wds/toy_cls",), dataset_root=str(root))
    args = clip_benchmark_args(Path("/m"), tmp_path / "r{x}", "wds/toy_cls", cfg)
    assert "--no_amp" in args and args[args.index("--model") + 1] == "local-dir:/m"
    assert args[args.index("--dataset_root") + 1] == f"{root}/{{dataset_cleaned}}"
    assert args[args.index("--task") + 1] == "zeroshot_classification"
    assert args[args.index("--output") + 1] == f"{tmp_path}/r{{{{x}}}}/{{dataset}}_{{task}}.json"
    with pytest.raises(UserError, match="needs CUDA"):
        BenchmarkConfig(datasets=("x",), dataset_root="r", task="linear_probe")
    with pytest.raises(UserError, match="benchmark task"):
        BenchmarkConfig(datasets=("x",), dataset_root="r", task="captioning")
    assert main(["eval", str(tmp_path), "--benchmark", "wds/missing", "--dataset-root", str(root)]) == 2


def _compt_metrics(model: torch.nn.Module, size: int, ctx: int, data: dict) -> dict[str, float]:
    """compt's own zero-shot and retrieval numbers on the images written to the wds datasets."""
    def pixels(images: list) -> TensorImages:
        return TensorImages(torch.stack([resize_center_crop(im, size) for im in images]))

    task = ZeroShotTask(name="toy", images=pixels(data["images"]), labels=torch.tensor(data["labels"]),
                        classnames=CLASSES, templates=tuple(t.replace("{c}", "{}") for t in TEMPLATES))
    caps = [c for cs in data["captions"] for c in cs]
    owner = torch.tensor([i for i, cs in enumerate(data["captions"]) for _ in cs])
    ret = RetrievalSet(images=pixels(data["ret_images"]), tokens=tokenize(caps, ctx), text_to_image=owner)
    return evaluate(model, EvalSuite(name="toy", context_length=ctx, zeroshot=(task,), retrieval=ret))


def test_clip_benchmark_agrees_with_compt_and_report_table(run_dir: Path, data_root: tuple[Path, dict]) -> None:
    root, data = data_root
    assert main(["eval", str(run_dir), "--benchmark", "wds/toy_cls,wds/toy_ret", "--dataset-root", str(root)]) == 0
    results = run_dir / "benchmark/results"
    for m in run_members(run_dir):
        cls = json.loads((results / m.key / "toy_cls_zeroshot_classification.json").read_text())
        ret = json.loads((results / m.key / "toy_ret_zeroshot_retrieval.json").read_text())
        assert cls["dataset"] == "wds/toy_cls" and cls["model"].startswith("local-dir:")
        ckpt = load_checkpoint(run_dir / m.key / "final.pt")
        cfg = ckpt.model_config
        ours = _compt_metrics(create_model(cfg, state_dict=ckpt.state_dict), cfg.vision.image_size,
                              cfg.text.context_length, data)
        assert 100 * cls["metrics"]["acc1"] == pytest.approx(ours["zeroshot/toy/top1"], abs=1e-6)
        for k in (1, 5, 10):
            assert 100 * ret["metrics"][f"image_retrieval_recall@{k}"] == pytest.approx(ours[f"retrieval/t2i_r{k}"])
            assert 100 * ret["metrics"][f"text_retrieval_recall@{k}"] == pytest.approx(ours[f"retrieval/i2t_r{k}"])
    bench = load_benchmark(run_dir)
    assert bench["columns"] == [("wds/toy_cls", "zeroshot_classification"), ("wds/toy_ret", "zeroshot_retrieval")]
    b_chain, b_ind = bench["scores"][("test/B", "chain")], bench["scores"][("test/B", "individual")]
    _, md = write_report([run_dir])
    row = [line for line in md.splitlines() if line.startswith("| test/B |")][-1]  # the benchmark table
    delta = b_chain[bench["columns"][0]] - b_ind[bench["columns"][0]]
    assert f"{delta:+.1f}" in row.split("|")[4]
    assert (run_dir / "report/benchmark.json").is_file()


def test_fashion_mnist_converter_writes_clip_benchmark_layout(tmp_path: Path) -> None:
    import tarfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from fashion_mnist_wds import convert
    from test_data_real import fake_fashion

    folder = convert(tmp_path / "root", str(fake_fashion(tmp_path / "fm", n=12)), train=5)
    assert folder == tmp_path / "root/fashion_mnist" and dataset_folder("wds/fashion_mnist", str(tmp_path / "root")
                                                                        ) == folder
    assert len((folder / "classnames.txt").read_text().splitlines()) == 10
    assert all("{c}" in t for t in (folder / "zeroshot_classification_templates.txt").read_text().splitlines())
    for split, n in (("test", 12), ("train", 5)):
        assert (folder / split / "nshards.txt").read_text().strip() == "1"
        with tarfile.open(folder / split / "0.tar") as tar:
            names = tar.getnames()
            assert len(names) == 2 * n and names[:2] == ["s0000000.png", "s0000000.cls"]
            assert tar.extractfile("s0000003.cls").read() == b"3"


def test_clip_benchmark_runs_with_cuda_hidden_and_fp32(run_dir: Path, data_root: tuple[Path, dict],
                                                        monkeypatch) -> None:
    """clip_benchmark has no device flag and takes CUDA when it sees it: its subprocess gets
    CUDA_VISIBLE_DEVICES="" and every run --no_amp (docs/benchmark.md)."""
    import compt.clip.bench as bench

    root, _ = data_root
    calls = []

    def fake_run(cmd, env, check):
        calls.append((cmd, env, json.loads(Path(cmd[-1]).read_text())))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    bench.run_benchmark(run_dir, BenchmarkConfig(datasets=("wds/toy_cls",), dataset_root=str(root)))
    ((cmd, env, spec),) = calls
    assert cmd[1:3] == ["-m", "compt.clip.bench.runner"] and env["CUDA_VISIBLE_DEVICES"] == ""
    assert len(spec["runs"]) == len(run_members(run_dir)) and all("--no_amp" in args for args in spec["runs"])
