"""LAION's clip_benchmark as compt's evaluation backend (`compt eval RUN_DIR --benchmark …`; extra ``compt[bench]``).

Every finished member of a run is exported as an open_clip ``local-dir`` folder (`compt.export`) and evaluated
by clip_benchmark itself — its dataset builders, its metrics, its command line — in one subprocess
(`compt.clip.bench.runner`) that hides CUDA, so it runs on CPU, and passes ``--no_amp``, so it runs in fp32
(clip_benchmark's default is autocast, i.e. bf16 on CPU). Layout inside the run directory::

    RUN/benchmark/export/<member>/          open_clip local-dir folders + members.json
    RUN/benchmark/results/<member>/<dataset>_<task>.json   clip_benchmark's own output (``clip_benchmark build``
                                                           merges them into one CSV)

``<member>`` is the member's folder in the run (``chain/02-tiny_ViT-T``, ``baselines/tiny_ViT-T``). Dataset
names are clip_benchmark's (``wds/<name>``, ``cifar10``, …). ``dataset_root`` is a folder that holds one folder
per dataset, named like clip_benchmark's ``{dataset_cleaned}`` (``wds/fashion_mnist`` → ``ROOT/fashion_mnist``),
or a clip_benchmark root template containing ``{dataset}`` / ``{dataset_cleaned}`` (e.g. ``ROOT/wds_{dataset_cleaned}``
for local clones of the ``clip-benchmark/wds_*`` repositories).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compt.errors import UserError, unknown_name

TASKS = ("auto", "zeroshot_classification", "zeroshot_retrieval", "linear_probe")
BENCH_DIR = "benchmark"


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    """What `compt eval --benchmark` runs: clip_benchmark datasets × one task, and its loader settings."""

    datasets: tuple[str, ...]
    dataset_root: str
    task: str = "auto"
    batch_size: int = 64
    workers: int = 0
    recall_k: tuple[int, ...] = (1, 5, 10)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise unknown_name("benchmark task", self.task, TASKS)
        if self.task == "linear_probe":
            raise UserError("clip_benchmark's linear probe needs CUDA (clip-benchmark 1.6 asserts device == 'cuda'), "
                            "and compt runs clip_benchmark on CPU; compt's own probe: `compt eval CHECKPOINT --data …`")
        if not self.datasets or not all(self.datasets):
            raise UserError("--benchmark needs one or more dataset names, comma separated")


def root_template(root: str) -> str:
    """clip_benchmark's ``--dataset_root`` template for `root`: kept when it has fields, else ROOT/{dataset_cleaned}."""
    return root if "{" in root else os.path.join(root, "{dataset_cleaned}")


def dataset_folder(dataset: str, root: str) -> Path:
    """The folder clip_benchmark reads `dataset` from (its ``--dataset_root`` template, formatted as it does)."""
    name = dataset.removeprefix("wds/")
    return Path(root_template(root).format(dataset=name, dataset_cleaned=name.replace("/", "-")))


def resolve_task(dataset: str, root: str, task: str) -> str:
    """`task`, except that ``auto`` on a wds dataset reads its ``dataset_type.txt`` (retrieval or not).

    clip_benchmark's own ``auto`` knows retrieval only by dataset name (flickr30k, mscoco_captions …), so a
    local ``wds/<name>`` retrieval set would otherwise be run as classification. Other datasets: clip_benchmark's
    ``auto``.
    """
    if task != "auto" or not dataset.startswith("wds/"):
        return task
    kind = dataset_folder(dataset, root) / "dataset_type.txt"
    is_retrieval = kind.is_file() and kind.read_text().strip().lower() == "retrieval"
    return "zeroshot_retrieval" if is_retrieval else "zeroshot_classification"


def _check_offline(dataset: str, root: str) -> None:
    if dataset.startswith("wds/") and "://" not in root:
        folder = dataset_folder(dataset, root)
        if not (folder / "test" / "nshards.txt").is_file():
            raise UserError(f"{dataset}: no clip_benchmark wds dataset at {folder} (expected test/nshards.txt, "
                            f"test/0.tar …); see benchmarks/fashion_mnist_wds.py for a converter")


def clip_benchmark_args(model_dir: Path, result_dir: Path, dataset: str, cfg: BenchmarkConfig) -> list[str]:
    """clip_benchmark ``eval`` arguments for one member folder × one dataset (fp32, results in `result_dir`)."""
    output = str(result_dir).replace("{", "{{").replace("}", "}}") + "/{dataset}_{task}.json"
    task = resolve_task(dataset, cfg.dataset_root, cfg.task)
    return ["eval", "--model", f"local-dir:{model_dir}", "--pretrained", "", "--dataset", dataset,
            "--dataset_root", root_template(cfg.dataset_root), "--task", task, "--no_amp",
            "--batch_size", str(cfg.batch_size), "--num_workers", str(cfg.workers),
            "--recall_k", *[str(k) for k in cfg.recall_k], "--output", output, "--quiet"]


def _this_compt_on_path() -> str:
    """PYTHONPATH for the subprocess: the folder this `compt` package was imported from comes first."""
    import compt

    return os.pathsep.join([str(Path(compt.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])


def run_benchmark(run_dir: str | Path, cfg: BenchmarkConfig) -> list[Path]:
    """Export every member of `run_dir` and evaluate it with clip_benchmark; returns the result files."""
    if importlib.util.find_spec("clip_benchmark") is None:
        raise UserError("clip_benchmark is not installed: pip install 'compt[bench]'")
    from compt.export import export_run

    for dataset in cfg.datasets:
        _check_offline(dataset, cfg.dataset_root)
    bench = Path(run_dir) / BENCH_DIR
    members = export_run(run_dir, bench / "export")
    with tempfile.TemporaryDirectory(prefix="compt-bench-") as tmp:
        runs = []
        for member, folder in members:
            result_dir = bench / "results" / member.key
            result_dir.mkdir(parents=True, exist_ok=True)
            runs += [clip_benchmark_args(folder.resolve(), result_dir.resolve(), d, cfg) for d in cfg.datasets]
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"runs": runs}))
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": _this_compt_on_path()}
        done = subprocess.run([sys.executable, "-m", "compt.clip.bench.runner", str(spec)], env=env, check=False)
    if done.returncode != 0:
        raise UserError(f"clip_benchmark failed (exit status {done.returncode}); its output is above")
    return sorted((bench / "results").glob("**/*.json"))
