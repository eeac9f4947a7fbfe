"""The embedded synthetic corpus: determinism, splits, caption slots, preprocessing, tokenizer."""

from __future__ import annotations

import dataclasses

import numpy as np
import open_clip
import pytest
import torch

from compt.clip.data import build_eval_suite, build_train_dataset, synthetic
from compt.clip.data.images import OPENAI_MEAN, OPENAI_STD, normalize
from compt.clip.data.text import sample_captions, split_sentences, template_captions, tokenize
from compt.clip.models import get_model_config
from compt.clip.settings import ClipDataConfig

TEST = get_model_config("test/A")     # 16×16, context 16
TINY = get_model_config("tiny/ViT-N")  # 32×32, context 32


def small(**kw) -> ClipDataConfig:
    return ClipDataConfig(**{"num_samples": 96, "eval_samples": 40, "probe_samples": 32, **kw})


def test_item_contract_at_model_sizes() -> None:
    for cfg in (TEST, TINY):
        ds = build_train_dataset(small(captions_per_image=3), cfg)
        image, tokens, index = ds[5]
        size, ctx = cfg.vision.image_size, cfg.text.context_length
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert tokens.shape == (3, ctx) and tokens.dtype == torch.long
        assert index == 5 and len(ds) == 96 and ds.deterministic is True
        assert (tokens[:, 0] == 49406).all() and (tokens.argmax(dim=1) > 0).all()  # SOT … EOT


def test_same_seed_gives_identical_tensors_and_prefixes() -> None:
    a = build_train_dataset(small(captions_per_image=2), TEST)
    b = build_train_dataset(small(captions_per_image=2), TEST)
    longer = build_train_dataset(small(captions_per_image=2, num_samples=200), TEST)
    for i in (0, 17, 95):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
        assert torch.equal(a[i][0], longer[i][0]) and torch.equal(a[i][1], longer[i][1])  # prefix property
    other = build_train_dataset(small(captions_per_image=2, seed=1), TEST)
    assert not torch.equal(a[0][0], other[0][0])


def test_train_and_eval_never_overlap() -> None:
    train = build_train_dataset(small(num_samples=300), TINY)
    suite = build_eval_suite(small(eval_samples=100), TINY)
    train_px = {bytes(x.numpy()) for x in train.images.images}
    eval_px = {bytes(x.numpy()) for x in suite.retrieval.images.images}
    assert len(eval_px) == 100 and not train_px & eval_px


def test_caption_slots_are_distinct_variants_of_the_scene() -> None:
    scenes = synthetic.sample_scenes(0, 0, 50)
    caps = synthetic.captions_for(scenes, 7, seed=0, split=0)
    assert caps == synthetic.captions_for(scenes, 7, seed=0, split=0)
    for i, slots in enumerate(caps):
        assert len(set(slots)) == 7
        colour = list(synthetic.COLOURS)[scenes.colour[i]]
        assert colour in slots[0] and synthetic.SHAPES[scenes.shape[i]] in slots[0]  # slot 0: full description
    ds = build_train_dataset(small(captions_per_image=7), TEST)
    assert len({tuple(t.tolist()) for t in ds[3][1]}) == 7


def test_eval_suite_tasks_and_probe() -> None:
    suite = build_eval_suite(small(), TEST)
    names = [t.name for t in suite.zeroshot]
    assert names == ["shape", "colour", "count", "size", "position"]
    for task in suite.zeroshot:
        assert int(task.labels.max()) < len(task.classnames) and all("{}" in t for t in task.templates)
        assert task.probe_labels is not None and len(task.probe_labels) <= 32
    assert len(suite.retrieval.tokens) == 40 and torch.equal(suite.retrieval.text_to_image, torch.arange(40))
    none = build_eval_suite(small(probe_samples=0), TEST)
    assert all(t.probe_images is None for t in none.zeroshot)


def test_disk_cache_round_trip(tmp_path) -> None:
    cfg = small(cache_dir=str(tmp_path))
    a = build_train_dataset(cfg, TEST)
    assert len(list(tmp_path.glob("synthetic-*.pt"))) == 1
    b = build_train_dataset(cfg, TEST)
    assert torch.equal(a.images.images, b.images.images)


def test_render_is_vectorised_and_fast() -> None:
    import time

    scenes = synthetic.sample_scenes(0, 0, 2000)
    start = time.perf_counter()
    images = synthetic.render(scenes, 32)
    assert images.shape == (2000, 3, 32, 32) and images.dtype == np.uint8
    assert time.perf_counter() - start < 20.0  # ~0.4 s idle; generous for a shared machine
    assert images.std() > 20  # not blank


def test_normalize_matches_open_clip_transform() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8))
    from compt.clip.data.images import resize_center_crop

    ours = normalize(resize_center_crop(pil, 32))
    ref = open_clip.image_transform(32, is_train=False)(pil)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert OPENAI_MEAN == open_clip.OPENAI_DATASET_MEAN and OPENAI_STD == open_clip.OPENAI_DATASET_STD


def test_normalize_on_a_device_copies_its_constants_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's normalisation on the device must not copy mean/std from the host (a sync) on every call:
    counted on the meta device (any non-CPU device takes that path) through ``Tensor.to``."""
    from compt.clip.data import images as images_mod

    copies, to = [], torch.Tensor.to

    def counting_to(self: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self is images_mod._MEAN or self is images_mod._STD:
            copies.append(args)
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    batch = torch.zeros(4, 3, 8, 8, dtype=torch.uint8, device="meta")
    first = normalize(batch)
    warm = len(copies)
    second = normalize(batch)
    assert warm <= 2 and len(copies) == warm  # at most one copy each of mean and std, none on later calls
    assert first.shape == second.shape == batch.shape and second.dtype == torch.float32


def test_fast_tokenizer_matches_open_clip() -> None:
    scenes = synthetic.sample_scenes(3, 0, 40)
    texts = [c for caps in synthetic.captions_for(scenes, 8, seed=3, split=0) for c in caps]
    texts += ["Héllo   WORLD!!  &amp; café", "don't stop", "x" * 300, "", "naïve  \t tabs\nnew line", "2024年"]
    for ctx in (8, 16, 77):
        assert torch.equal(tokenize(texts, ctx), open_clip.tokenizer.tokenize(texts, context_length=ctx))


def test_caption_sampling_is_deterministic_raw_plus_sentences() -> None:
    caps = ("raw caption", "First long. Second long! Third long?", "Fourth.")
    a = sample_captions(caps, 4, seed=0, index=7)
    assert a == sample_captions(caps, 4, seed=0, index=7)
    assert a[0] == "raw caption" and len(set(a[1:])) == 3
    assert set(a[1:]) <= set(split_sentences(caps[1]) + ["Fourth."])
    assert sample_captions(("only",), 3, seed=0, index=0) == ["only"] * 3
    assert len(sample_captions(caps, 9, seed=0, index=1)) == 9  # pool reused when K-1 > pool
    assert len(set(template_captions("cat", ("a {}.", "the {}.", "{}!"), 3, seed=0, index=2))) == 3


def test_frozen_dataclass_fields_added() -> None:
    names = {f.name for f in dataclasses.fields(ClipDataConfig)}
    assert {"caption_separator", "predecode_max", "cache_dir", "zeroshot_folder", "probe_samples"} <= names


@pytest.mark.parametrize("k", [1, 7])
def test_dataloader_batches(k: int) -> None:
    ds = build_train_dataset(small(captions_per_image=k), TEST)
    images, tokens, index = next(iter(torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)))
    assert images.shape == (32, 3, 16, 16) and tokens.shape == (32, k, 16) and index.shape == (32,)
    for j in range(3):
        assert torch.equal(images[j], ds[int(index[j])][0]) and torch.equal(tokens[j], ds[int(index[j])][1])
