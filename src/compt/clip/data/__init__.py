"""Training data and held-out evaluation suites for every `data.kind`.

`build_train_dataset(data, model_cfg)` → a map-style dataset whose item i is
``(image float (3, H, W) normalised with OPENAI mean/std at model_cfg.vision.image_size,
tokens long (K, model_cfg.text.context_length) with K = data.captions_per_image, i)``; its ``deterministic``
attribute is True (no augmentation, caption slots fixed per index), so teacher outputs can be cached.

`build_eval_suite(data, model_cfg)` → an `EvalSuite` (zero-shot class sets, retrieval split, probe data)
for `evaluate(model, suite)` (re-exported from `compt.clip.evaluation`); with ``validation=True`` the suite of
the validation split that stopping probes read (`compt.train.stopping`), disjoint from the held-out one.

Kinds: ``synthetic`` (embedded, no download), ``csv``, ``wds`` (indexed shards: exact resume, cacheable
teacher), ``wds-stream`` (`compt.clip.data.stream`: shards streamed by the webdataset library; evaluation on
``data.eval_path``), ``fashion-mnist``, ``openclipart``, ``folder`` (image folder ``root/<class>/*``);
``text`` is registered for validation only: it is the corpus of language-model chains, which the
language-model paradigm reads itself (`compt.lm.data`). File sets without ``data.eval_path`` are split by
seed: a held-out ``min(eval_samples, n // 5)`` images never seen in training.

Validation split (only runs whose members train until a target read one; `carve` says whether the run carves it
out of the training data, resolved once per run by `compt.clip.paradigm.carves_validation`): ``data.val_path``
when set (a file set in the format of ``path``), else carved from the training data by a hash of each sample's
key (`compt.clip.data.carve`) after the held-out split, and then excluded from training; synthetic data draws it
from a scene stream of its own. Without `carve` the training data are the same as in a run that does not stop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from compt.clip.data import carve as carving
from compt.clip.data import files, real, stream, synthetic
from compt.clip.data.datasets import BadData, PairDataset, Record, build_pairs, clean_records
from compt.clip.data.images import TensorImages, cache_key, decode_all, load_cached, save_cached
from compt.clip.data.text import tokenize
from compt.clip.evaluation import evaluate
from compt.clip.evaluation.suite import EvalSuite, RetrievalSet, ZeroShotTask
from compt.clip.models import ModelConfig
from compt.clip.settings import ClipDataConfig
from compt.errors import UserError, unknown_name

__all__ = ["ADAPTERS", "KINDS", "DataAdapter", "EvalSuite", "PairDataset", "adapter", "build_eval_suite",
           "build_train_dataset", "check_data_kind", "evaluate", "labelled_folder", "tokenize"]

MAX_SYNTHETIC_GIB = 16          # pre-rendered uint8 images held in memory
MAX_RETRIEVAL_CAPTIONS = 5  # captions per image kept for retrieval (COCO has 5)


@dataclass(frozen=True, kw_only=True)
class DataAdapter:
    """One data kind: its training pairs, held-out evaluation suite and validation suite, each for (data, image
    size, context); training set and evaluation also for `carve` (the run carves its validation split out of the
    training data)."""

    train: Callable[[ClipDataConfig, int, int, bool], torch.utils.data.Dataset]
    eval_suite: Callable[[ClipDataConfig, int, int, bool], EvalSuite]
    validation_suite: Callable[[ClipDataConfig, int, int], EvalSuite]   # disjoint from eval_suite's and from training
    measures: tuple[str, ...]  # the headline metrics its validation suite measures (what a target may name)
    reads_path: bool = False   # the data is the file set named by data.path (nothing built in or downloaded)
    carves: bool = True        # its validation split is carved out of the training data (False: a source of its own)


def adapter(kind: str) -> DataAdapter:
    """The registered adapter of `kind` (a one-line UserError naming the known kinds otherwise)."""
    if kind not in ADAPTERS:
        raise unknown_name("data kind", kind, ADAPTERS)
    return ADAPTERS[kind]


def check_data_kind(data: ClipDataConfig) -> None:
    """The data kind is a registered image–caption source, with the path it needs (`compt.clip.data.ADAPTERS`);
    ``val_path`` only for data read from files."""
    if adapter(data.kind).reads_path and not data.path.strip():  # unknown kinds raise in adapter()
        raise UserError(f"data.kind = {data.kind!r} needs data.path (a CSV file, a shard pattern or a folder)")
    if data.val_path and not adapter(data.kind).reads_path:
        have = ", ".join(k for k, a in ADAPTERS.items() if a.reads_path)
        raise UserError(f"data.val_path names a validation set of files, which data kind {data.kind!r} does not read "
                        f"(kinds that do: {have}); leave it unset")


def build_train_dataset(data: ClipDataConfig, model_cfg: ModelConfig, *,
                        carve: bool = False) -> torch.utils.data.Dataset:
    """The training image–caption pairs of `data`, preprocessed for `model_cfg` (see module doc); with `carve`,
    without the validation split."""
    if data.captions_per_image < 1:
        raise UserError(f"captions_per_image must be at least 1, got {data.captions_per_image}")
    return adapter(data.kind).train(data, model_cfg.vision.image_size, model_cfg.text.context_length, carve)


def build_eval_suite(data: ClipDataConfig, model_cfg: ModelConfig, *, validation: bool = False,
                     carve: bool = False) -> EvalSuite:
    """Held-out zero-shot tasks / retrieval split / probe data of `data` for `model_cfg`; with `validation`, the
    tasks `adapter(kind).measures` on the validation split (what stopping probes read; disjoint from the held-out
    split and from training). `carve`: the run carves its validation split out of the training data."""
    size, ctx = model_cfg.vision.image_size, model_cfg.text.context_length
    suite = adapter(data.kind).validation_suite(data, size, ctx) if validation else \
        adapter(data.kind).eval_suite(data, size, ctx, carve)
    if data.zeroshot_folder and not validation:
        extra = _labelled_task("folder", labelled_folder(data.zeroshot_folder, data, size), None)
        suite = EvalSuite(name=suite.name, context_length=ctx, zeroshot=(*suite.zeroshot, extra),
                          retrieval=suite.retrieval)
    return suite


def validation_line(data: ClipDataConfig, suite: EvalSuite) -> str:
    """What the run's validation split is, in one line (said when a run that stops starts)."""
    n = len(suite.retrieval.images) if suite.retrieval is not None else len(suite.zeroshot[0].labels)
    if not adapter(data.kind).carves:
        return f"validation split (until/target): {n} samples of the {data.kind} data's own validation stream"
    if data.val_path:
        return f"validation split (until/target): {n} samples of data.val_path {data.val_path}"
    source = f"{data.kind} data {data.path}" if data.path else f"the {data.kind} data"
    return (f"validation split (until/target): {n} samples carved from {source} by a hash of their keys — excluded "
            f"from training, disjoint from the held-out split")


# ----------------------------------------------------------------------------------------------- synthetic
def _synthetic_images(data: ClipDataConfig, scenes: synthetic.Scenes, size: int, split: int) -> torch.Tensor:
    """Render (or read the cache of, when ``data.cache_dir`` is set) uint8 (N, 3, size, size)."""
    use_cache = data.cache_dir not in ("", "none")
    path = None
    if use_cache:
        from pathlib import Path

        key = cache_key("synthetic", synthetic.CACHE_VERSION, data.seed, split, size, len(scenes))
        path = Path(data.cache_dir) / f"synthetic-s{data.seed}-{split}-{size}px-{len(scenes)}-{key}.pt"
        cached = load_cached(path)
        if cached is not None and cached["images"].shape == (len(scenes), 3, size, size):
            return cached["images"]
    images = torch.from_numpy(synthetic.render(scenes, size))
    save_cached(path, {"images": images})
    return images


def _synthetic_pairs(data: ClipDataConfig, size: int, ctx: int, *, split: int, n: int, k: int) -> PairDataset:
    gib = n * 3 * size * size / 2**30
    if gib > MAX_SYNTHETIC_GIB:
        raise UserError(f"a synthetic set of {n} images at {size}×{size} needs {gib:.0f} GiB in memory (limit "
                        f"{MAX_SYNTHETIC_GIB} GiB); lower data.num_samples / data.eval_samples")
    scenes = synthetic.sample_scenes(data.seed, split, n)
    captions = synthetic.captions_for(scenes, k, seed=data.seed, split=split)
    tokens = tokenize([c for caps in captions for c in caps], ctx).view(n, k, ctx).to(torch.int32)
    images = TensorImages(_synthetic_images(data, scenes, size, split))
    return PairDataset(images, tokens=tokens, captions=[tuple(c) for c in captions], k=k, context_length=ctx,
                       seed=data.seed, name="synthetic")


SYNTHETIC_VALIDATION = 2   # the synthetic corpus's scene stream of the validation split (0: training, 1: held-out)


def _synthetic_validation(data: ClipDataConfig, size: int, ctx: int) -> EvalSuite:
    return _synthetic_suite(data, size, ctx, split=SYNTHETIC_VALIDATION)


def _synthetic_suite(data: ClipDataConfig, size: int, ctx: int, carve: bool = False, split: int = 1) -> EvalSuite:
    held_out = _synthetic_pairs(data, size, ctx, split=split, n=data.eval_samples, k=1)
    scenes = synthetic.sample_scenes(data.seed, split, data.eval_samples)
    probe_scenes = synthetic.sample_scenes(data.seed, 0, data.probe_samples)  # a prefix of the training set
    probe_images = TensorImages(_synthetic_images(data, probe_scenes, size, 0)) if data.probe_samples else None
    probe_labels = synthetic.zeroshot_labels(probe_scenes)
    tasks = []
    for name, (classes, labels, idx) in synthetic.zeroshot_labels(scenes).items():
        p_classes, p_labels, p_idx = probe_labels[name]
        tasks.append(ZeroShotTask(
            name=name, images=held_out.images, labels=torch.as_tensor(labels, dtype=torch.long),
            indices=torch.as_tensor(idx, dtype=torch.long), classnames=classes,
            templates=synthetic.ZEROSHOT_TEMPLATES[name], probe_images=probe_images,
            probe_labels=torch.as_tensor(p_labels, dtype=torch.long) if probe_images is not None else None,
            probe_indices=torch.as_tensor(p_idx, dtype=torch.long) if probe_images is not None else None))
    return EvalSuite(name="synthetic", context_length=ctx, zeroshot=tuple(tasks), retrieval=_retrieval(held_out, ctx))


# ----------------------------------------------------------------------------------------------- files
def _read_records(path: str, data: ClipDataConfig) -> tuple[list[Record], BadData]:
    """(usable records, what was skipped and out of how many) of a CSV or shard set.

    Index-time problems (undecodable caption rows, missing/truncated shards, empty captions, missing image
    files) are counted over the whole source, before any split, and checked against
    ``data.max_bad_fraction`` once — so a bad row that lands in a small held-out split does not tip it over.
    """
    bad = BadData(path, data.max_bad_fraction)
    records = files.read_csv(path, data, bad) if data.kind == "csv" else files.read_shards(path, data, bad)
    unread = len(bad)
    good = clean_records(records, bad)
    bad.total = len(records) + unread
    bad.check(bad.total)
    return good, bad


def _split_records(data: ClipDataConfig, carve: bool) -> tuple[list[Record], list[Record], list[Record], BadData]:
    """(train, held-out, validation, the source's skipped records) of ``data.path``: a seeded split holding out
    min(eval_samples, n // 5) of the usable records (none with ``data.eval_path``), then with `carve` the
    validation split of the rest (`compt.clip.data.carve`)."""
    if not data.path:
        raise UserError(f"data.kind = {data.kind!r} needs data.path (a CSV file or a shard pattern)")
    records, bad = _read_records(data.path, data)
    if not records:
        raise UserError(f"{data.path}: no usable samples")
    n_eval = 0 if data.eval_path else min(data.eval_samples, len(records) // 5)
    held = set(real.subset(len(records), n_eval, data.seed, stream=1).tolist())
    rest = [i for i in range(len(records)) if i not in held]
    val = {rest[j] for j in carving.carve([records[i].key for i in rest], data, data.path)} if carve else set()
    return ([records[i] for i in rest if i not in val], [records[i] for i in sorted(held)],
            [records[i] for i in sorted(val)], bad)


def _own_records(path: str, data: ClipDataConfig) -> tuple[list[Record], BadData]:
    """(records, the source's skipped records) of ``data.val_path``: the `carve.wanted` of its usable records of
    lowest key rank (all when it holds fewer)."""
    records, bad = _read_records(path, data)
    pick = carving.lowest([r.key for r in records], carving.wanted(data), data.seed)
    carving.check(len(pick), path)
    return [records[i] for i in pick], bad


def _held_out_records(data: ClipDataConfig) -> tuple[list[Record], BadData]:
    """(records, their source's skipped records): ``data.eval_path`` (at most eval_samples of it, seeded) when set,
    else the held-out split of ``data.path``."""
    if not data.eval_path:
        _, held_out, _, bad = _split_records(data, carve=False)
        if not held_out:
            raise UserError(f"{data.path}: too few samples to hold out an evaluation split (needs at least 5); "
                            f"set data.eval_path")
        return held_out, bad
    records, bad = _read_records(data.eval_path, data)
    if not records:
        raise UserError(f"{data.eval_path}: no usable samples")
    pick = real.subset(len(records), data.eval_samples, data.seed, stream=1)
    return [records[i] for i in sorted(pick)], bad


def _retrieval(pairs: PairDataset, ctx: int) -> RetrievalSet:
    """Retrieval over a pair set: each image with its (up to 5) distinct captions."""
    assert pairs.captions is not None
    texts: list[str] = []
    owner: list[int] = []
    for i, caps in enumerate(pairs.captions):
        for c in list(dict.fromkeys(caps))[:MAX_RETRIEVAL_CAPTIONS]:
            texts.append(c)
            owner.append(i)
    return RetrievalSet(images=pairs.images, tokens=tokenize(texts, ctx), text_to_image=torch.tensor(owner))


# ----------------------------------------------------------------------------------------------- labelled sets
def _labelled_task(name: str, split: real.Labelled, probe: real.Labelled | None) -> ZeroShotTask:
    return ZeroShotTask(name=name, images=TensorImages(split.images), labels=split.labels,
                        classnames=split.classnames, templates=split.templates,
                        probe_images=TensorImages(probe.images) if probe is not None else None,
                        probe_labels=probe.labels if probe is not None else None)


Items = list[tuple[str, int]]   # (image path, label) of an image folder


def labelled_folder(root: str, data: ClipDataConfig, size: int) -> real.Labelled:
    """Decode an image folder (bad images skipped and counted) → labelled images."""
    classnames, items = files.read_folder(root)
    return _decode_labelled(items, classnames, root, data, size)


def _decode_labelled(items: Items, classnames: tuple[str, ...], source: str, data: ClipDataConfig,
                     size: int) -> real.Labelled:
    bad = BadData(source, data.max_bad_fraction)
    pixels, errors = decode_all([p for p, _ in items], size, workers=data.workers)
    for i in sorted(errors):
        bad.add(items[i][0], errors[i])
    bad.check(len(items))
    keep = torch.tensor([i for i in range(len(items)) if i not in errors], dtype=torch.long)
    labels = torch.tensor([label for _, label in items], dtype=torch.long)[keep]
    return real.Labelled(pixels[keep], labels, classnames, real.FOLDER_TEMPLATES)


def _folder_items(data: ClipDataConfig, carve: bool) -> tuple[tuple[str, ...], Items, Items]:
    """(class names, training items, validation items) of the folder ``data.path``; with `carve`, the validation
    split (keys: paths below the folder) taken out of training."""
    classnames, items = files.read_folder(data.path)
    if not carve:
        return classnames, items, []
    val = set(carving.carve([os.path.relpath(p, data.path) for p, _ in items], data, data.path))
    return classnames, [it for i, it in enumerate(items) if i not in val], [items[i] for i in sorted(val)]


# ----------------------------------------------------------------------------------------------- openclipart
def _openclipart_split(data: ClipDataConfig, size: int, carve: bool) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(all decoded clip art, train, held-out and validation indices — the last empty without `carve`; keys:
    paths below the clip-art root); undecodable images are dropped and counted."""
    payload = real.openclipart(data, size)
    bad = BadData("openclipart", data.max_bad_fraction)
    for i, err in sorted(payload["errors"].items()):
        bad.add(payload["paths"][i], err)
    bad.check(len(payload["paths"]))
    good = np.array([i for i in range(len(payload["paths"])) if i not in payload["errors"]], dtype=np.int64)
    order = good[real.subset(len(good), len(good), data.seed, stream=1)]
    n_eval = min(data.eval_samples, len(good) // 5)
    train, held = np.sort(order[n_eval:]), np.sort(order[:n_eval])
    if not carve:
        return payload, train, held, train[:0]
    root = data.path or real.OPENCLIPART_DIR
    val = carving.carve([os.path.relpath(payload["paths"][i], root) for i in train], data, "openclipart")
    return payload, np.delete(train, val), held, train[val]


def _openclipart_pairs(payload: dict, idx: Sequence[int], data: ClipDataConfig, ctx: int, k: int) -> PairDataset:
    from compt.clip.data.datasets import pretokenize

    captions = [tuple(payload["captions"][i]) for i in idx]
    return PairDataset(TensorImages(payload["images"][torch.as_tensor(idx)]), captions=captions, k=k,
                       tokens=pretokenize(captions, k, ctx, data.seed), context_length=ctx, seed=data.seed,
                       name="openclipart")


def _openclipart_train(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> PairDataset:
    payload, train, _, _ = _openclipart_split(data, size, carve)
    return _openclipart_pairs(payload, train, data, ctx, data.captions_per_image)


def _openclipart_suite(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> EvalSuite:
    payload, _, held, _ = _openclipart_split(data, size, carve)
    return _openclipart_tasks(payload, held, data, ctx)


def _openclipart_validation(data: ClipDataConfig, size: int, ctx: int) -> EvalSuite:
    payload, _, _, val = _openclipart_split(data, size, carve=True)
    return _openclipart_tasks(payload, val, data, ctx)


def _openclipart_tasks(payload: dict, idx: np.ndarray, data: ClipDataConfig, ctx: int) -> EvalSuite:
    """Retrieval (title captions) on the clip art `idx`; zero-shot over the top-level categories."""
    pairs = _openclipart_pairs(payload, idx, data, ctx, 1)
    retrieval = RetrievalSet(images=pairs.images, tokens=tokenize([c[0] for c in pairs.captions or []], ctx),
                             text_to_image=torch.arange(len(idx)))
    categories = [payload["category"][i] for i in idx]
    classes = sorted(c for c in set(payload["category"]) if c not in real.OPENCLIPART_SKIP_CATEGORIES)
    rows = [j for j, c in enumerate(categories) if c in classes]
    task = ZeroShotTask(name="category", images=pairs.images, indices=torch.tensor(rows, dtype=torch.long),
                        labels=torch.tensor([classes.index(categories[j]) for j in rows], dtype=torch.long),
                        classnames=tuple(files.classname_of(c) for c in classes),
                        templates=real.OPENCLIPART_TEMPLATES)
    return EvalSuite(name="openclipart", context_length=ctx, zeroshot=(task,), retrieval=retrieval)


# ----------------------------------------------------------------------------------------------- registry
def _synthetic_train(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> PairDataset:
    return _synthetic_pairs(data, size, ctx, split=0, n=data.num_samples, k=data.captions_per_image)


def _files_train(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> PairDataset:
    train, _, _, bad = _split_records(data, carve)
    return build_pairs(train, data, size, ctx, source=data.path, source_bad=bad)


def _files_suite(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> EvalSuite:
    held_out, bad = _held_out_records(data)
    return _retrieval_suite(held_out, bad, data.eval_path or f"{data.path} (held-out)", data, size, ctx)


def _files_validation(data: ClipDataConfig, size: int, ctx: int) -> EvalSuite:
    """``data.val_path``, else the split carved from ``data.path`` (`_split_records`)."""
    if data.val_path:
        records, bad = _own_records(data.val_path, data)
        return _retrieval_suite(records, bad, data.val_path, data, size, ctx)
    _, _, val, bad = _split_records(data, carve=True)
    return _retrieval_suite(val, bad, f"{data.path} (validation)", data, size, ctx)


def _retrieval_suite(records: list[Record], bad: BadData, source: str, data: ClipDataConfig, size: int,
                     ctx: int) -> EvalSuite:
    pairs = build_pairs(records, data, size, ctx, source=source, source_bad=bad)
    return EvalSuite(name=data.kind, context_length=ctx, retrieval=_retrieval(pairs, ctx))


def _stream_train(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> torch.utils.data.Dataset:
    return stream.streaming_pairs(data, size, ctx, carve)


def _stream_suite(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> EvalSuite:
    """A stream has no held-out split: evaluation reads ``data.eval_path`` with the indexed reader."""
    if not data.eval_path:
        raise UserError('data.kind = "wds-stream" evaluates on data.eval_path (held-out shards); set it')
    return _files_suite(data, size, ctx, carve)


def _stream_validation(data: ClipDataConfig, size: int, ctx: int) -> EvalSuite:
    """``data.val_path``, else the samples of ``data.path`` the stream skips (`carve.stream_bound`), read with the
    indexed reader: at most `carve.wanted` of them, those of lowest key rank."""
    if data.val_path:
        return _files_validation(data, size, ctx)
    if "://" in data.path:
        raise UserError('data.kind = "wds-stream" carves its validation split by reading data.path\'s shards, which '
                        'are not local files; set data.val_path')
    records, bad = _read_records(data.path, data)
    bound = carving.stream_bound(data)
    below = [r for r in records if carving.key_rank(r.key, data.seed) < bound]
    pick = carving.lowest([r.key for r in below], carving.wanted(data), data.seed)
    carving.check(len(pick), data.path)
    return _retrieval_suite([below[i] for i in pick], bad, f"{data.path} (validation)", data, size, ctx)


def _fashion_mnist_train(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> PairDataset:
    split = real.fashion_mnist(data, size, "train", data.num_samples, stream=0, part="train" if carve else None)
    return real.template_pairs(split, data.captions_per_image, ctx, data.seed, "fashion-mnist")


def _fashion_mnist_suite(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> EvalSuite:
    test = real.fashion_mnist(data, size, "t10k", data.eval_samples, stream=1)
    probe = real.fashion_mnist(data, size, "train", data.probe_samples, stream=0) if data.probe_samples else None
    return EvalSuite(name="fashion-mnist", context_length=ctx, zeroshot=(_labelled_task("fashion-mnist", test, probe),))


def _fashion_mnist_validation(data: ClipDataConfig, size: int, ctx: int) -> EvalSuite:
    val = real.fashion_mnist(data, size, "train", data.num_samples, stream=0, part="validation")
    return EvalSuite(name="fashion-mnist", context_length=ctx, zeroshot=(_labelled_task("fashion-mnist", val, None),))


def _folder_train(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> PairDataset:
    classnames, train, _ = _folder_items(data, carve)
    labelled = _decode_labelled(train, classnames, data.path, data, size)
    return real.template_pairs(labelled, data.captions_per_image, ctx, data.seed, data.path)


def _folder_suite(data: ClipDataConfig, size: int, ctx: int, carve: bool) -> EvalSuite:
    """``data.eval_path``, else the training images themselves (a folder has no held-out split)."""
    if data.eval_path:
        labelled = labelled_folder(data.eval_path, data, size)
    else:
        classnames, train, _ = _folder_items(data, carve)
        labelled = _decode_labelled(train, classnames, data.path, data, size)
    return EvalSuite(name="folder", context_length=ctx, zeroshot=(_labelled_task("folder", labelled, None),))


def _folder_validation(data: ClipDataConfig, size: int, ctx: int) -> EvalSuite:
    if data.val_path:
        classnames, items = files.read_folder(data.val_path)
        pick = carving.lowest([os.path.relpath(p, data.val_path) for p, _ in items], carving.wanted(data), data.seed)
        carving.check(len(pick), data.val_path)
        labelled = _decode_labelled([items[i] for i in pick], classnames, data.val_path, data, size)
    else:
        classnames, _, val = _folder_items(data, carve=True)
        labelled = _decode_labelled(val, classnames, f"{data.path} (validation)", data, size)
    return EvalSuite(name="folder", context_length=ctx, zeroshot=(_labelled_task("folder", labelled, None),))


def _text_only(data: ClipDataConfig, size: int, ctx: int, carve: bool = False) -> Any:
    raise UserError("[data] kind = \"text\" is a text corpus for language-model chains (compt.lm.data reads "
                    "it); CLIP models need image–caption data")


ZEROSHOT, RETRIEVAL = ("zeroshot_top1",), ("retrieval_r1",)   # headline metrics of a validation suite
# The one registry of data kinds: training set, evaluation and validation suites of each, from one entry.
ADAPTERS: dict[str, DataAdapter] = {
    "synthetic": DataAdapter(train=_synthetic_train, eval_suite=_synthetic_suite,
                             validation_suite=_synthetic_validation, measures=ZEROSHOT + RETRIEVAL, carves=False),
    "csv": DataAdapter(train=_files_train, eval_suite=_files_suite, validation_suite=_files_validation,
                       measures=RETRIEVAL, reads_path=True),
    "wds": DataAdapter(train=_files_train, eval_suite=_files_suite, validation_suite=_files_validation,
                       measures=RETRIEVAL, reads_path=True),
    "wds-stream": DataAdapter(train=_stream_train, eval_suite=_stream_suite, validation_suite=_stream_validation,
                              measures=RETRIEVAL, reads_path=True),
    "fashion-mnist": DataAdapter(train=_fashion_mnist_train, eval_suite=_fashion_mnist_suite,
                                 validation_suite=_fashion_mnist_validation, measures=ZEROSHOT),
    "openclipart": DataAdapter(train=_openclipart_train, eval_suite=_openclipart_suite,
                               validation_suite=_openclipart_validation, measures=ZEROSHOT + RETRIEVAL),
    "folder": DataAdapter(train=_folder_train, eval_suite=_folder_suite, validation_suite=_folder_validation,
                          measures=ZEROSHOT, reads_path=True),
    # data.path optional: compt.lm.text's default corpus
    "text": DataAdapter(train=_text_only, eval_suite=_text_only, validation_suite=_text_only, measures=()),
}
KINDS = tuple(ADAPTERS)
