"""Soft-label cache: equal to the online ensemble, keyed on teachers and augmentation, safe to interrupt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from meal.config.schema import DataConfig
from meal.core.teacher import Teacher
from meal.data import build_data
from meal.data.augment import normalize, reference_transform
from meal.softlabels import CacheStore, ensemble_targets, open_or_build
from meal.softlabels import source as source_module
from meal.softlabels.spec import cache_spec
from meal.softlabels.targets import SoftTargets
from tests.softlabels.toy import (
    data_cfg,
    load_teacher_files,
    method_cfg,
    save_teachers,
    toy_data,
    toy_teacher,
    toy_teachers,
)

FP16 = {"atol": 2e-3, "rtol": 2e-3}


def assert_close(cached: SoftTargets, online: SoftTargets, **tol: float) -> None:
    torch.testing.assert_close(cached.probs, online.probs, **tol)
    torch.testing.assert_close(cached.logits, online.logits, **tol)


@pytest.mark.parametrize(
    ("augment", "dtype", "slots"),
    [
        ("pad_crop_flip", "float16", 18),
        ("pad_crop", "float32", 9),
        ("flip", "bfloat16", 2),
        ("none", "float16", 1),
    ],
)
def test_cached_equals_online_for_the_same_augmented_samples(
    tmp_path: Path, augment: str, dtype: str, slots: int
) -> None:
    dcfg = data_cfg(augment=augment, pad=1)
    data = toy_data(dcfg)
    teachers = toy_teachers()
    mcfg = method_cfg(temperature=2.0, cache_dtype=dtype)
    cached = open_or_build(teachers, data, dcfg, mcfg, tmp_path, chunk_samples=7)
    assert cached.spec.slots == slots and cached.spec.kind == "finite"
    tol = {"float32": {"atol": 1e-5, "rtol": 1e-5}, "float16": FP16, "bfloat16": {"atol": 2e-2, "rtol": 2e-2}}[dtype]
    models = [t.model for t in teachers]
    seen = 0
    for epoch in range(2):
        data.train.set_epoch(epoch)
        for batch in data.train:
            online = ensemble_targets(models, batch.x, 2.0)
            assert_close(cached.targets(batch), online, **tol)
            seen += batch.x.shape[0]
    assert seen == 2 * data.train.num_samples
    if slots > 1:  # a different augmentation of the same samples has a clearly different target
        batch = next(iter(data.train))
        other = batch.aug.clone()
        other[:, 2 if "flip" in augment else 0] ^= 1
        wrong = cached.lookup(cached.flat_index(batch.index, other))
        assert (wrong.probs - ensemble_targets(models, batch.x, 2.0).probs).abs().max() > 5 * tol["atol"]


def test_every_slot_is_the_reference_transform_of_its_sample(tmp_path: Path) -> None:
    dcfg = data_cfg(augment="pad_crop_flip", pad=2, train_size=6)
    data = toy_data(dcfg)
    teachers = toy_teachers()
    cached = open_or_build(teachers, data, dcfg, method_cfg(cache_dtype="float32"), tmp_path)
    loader = data.train
    params = cached.spec.slot_params()
    assert params.shape == (50, 3) and params[:, :2].max() == 4
    for index in (0, 5):
        images = torch.stack(
            [reference_transform(loader.images[index], int(dx), int(dy), bool(f), 2) for dx, dy, f in params.tolist()]
        )
        online = ensemble_targets([t.model for t in teachers], normalize(images, loader.mean, loader.std), 1.0)
        flat = cached.flat_index(torch.full((50,), index), params)
        assert_close(cached.lookup(flat), online, atol=1e-5, rtol=1e-5)


def test_topk_compression_keeps_the_top_probabilities(tmp_path: Path) -> None:
    dcfg = data_cfg(augment="flip")
    data = toy_data(dcfg)
    teachers = toy_teachers()
    cached = open_or_build(teachers, data, dcfg, method_cfg(cache_topk=3), tmp_path)
    batch = next(iter(data.train))
    got = cached.targets(batch)
    want = ensemble_targets([t.model for t in teachers], batch.x, 1.0).probs
    top = want.topk(3, dim=1)
    torch.testing.assert_close(got.probs.gather(1, top.indices), top.values, **FP16)
    rest = (1 - top.values.sum(1, keepdim=True)) / 7
    mask = torch.ones_like(want, dtype=torch.bool).scatter_(1, top.indices, False)
    torch.testing.assert_close(got.probs[mask].view(-1, 7), rest.expand(-1, 7), **FP16)
    torch.testing.assert_close(got.probs.sum(1), torch.ones(len(want)), **FP16)
    torch.testing.assert_close(got.logits, got.probs.log(), atol=1e-5, rtol=1e-5)  # tau = 1


def test_changing_one_teacher_checkpoint_invalidates_the_cache(tmp_path: Path) -> None:
    dcfg = data_cfg(augment="flip")
    data = toy_data(dcfg)
    mcfg = method_cfg()
    paths = save_teachers(tmp_path)
    before = open_or_build(load_teacher_files(paths), data, dcfg, mcfg, tmp_path / "cache")
    again = open_or_build(load_teacher_files(paths), data, dcfg, mcfg, tmp_path / "cache")
    assert again.path == before.path, "same teachers, data and augmentation: the cache is reused"

    torch.save(toy_teacher(seed=99).state_dict(), paths[1])  # retrain one teacher in place
    teachers = load_teacher_files(paths)
    assert not CacheStore(tmp_path / "cache", cache_spec(teachers, data.train, dcfg, mcfg, 10)).is_complete()
    after = open_or_build(teachers, data, dcfg, mcfg, tmp_path / "cache")
    assert after.path != before.path
    batch = next(iter(data.train))
    assert_close(after.targets(batch), ensemble_targets([t.model for t in teachers], batch.x, 1.0), **FP16)
    assert (before.targets(batch).probs - after.targets(batch).probs).abs().max() > 0.05
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2


def test_key_covers_augmentation_data_and_target(tmp_path: Path) -> None:
    teachers = toy_teachers()
    base_data = data_cfg(augment="pad_crop_flip", pad=1)
    data = toy_data(base_data)

    def key(dcfg=base_data, mcfg=None, bundle=None) -> str:
        bundle = bundle or (data if dcfg is base_data else toy_data(dcfg))
        return cache_spec(teachers, bundle.train, dcfg, mcfg or method_cfg(), 10).key

    reference = key()
    assert key() == reference and key(mcfg=method_cfg(d_lr=0.5, cache_crops=3)) == reference
    changed = [
        key(data_cfg(augment="pad_crop_flip", pad=2)),
        key(data_cfg(augment="pad_crop", pad=1)),
        key(data_cfg(augment="pad_crop_flip", pad=1, train_size=41)),
        key(mcfg=method_cfg(temperature=4.0)),
        key(mcfg=method_cfg(cache_dtype="float32")),
        key(mcfg=method_cfg(cache_topk=5)),
        cache_spec(toy_teachers((1, 3)), data.train, base_data, method_cfg(), 10).key,
        cache_spec(list(reversed(teachers)), data.train, base_data, method_cfg(), 10).key,
    ]
    assert reference not in changed and len(set(changed)) == len(changed)
    # the pad of a non-cropping augmentation is irrelevant
    assert key(data_cfg(augment="flip", pad=1)) == key(data_cfg(augment="flip", pad=3))


def test_interrupted_build_is_detected_and_completed_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dcfg = data_cfg(augment="pad_crop_flip", pad=1, train_size=40)
    data = toy_data(dcfg)
    teachers = toy_teachers()
    mcfg = method_cfg()
    real = source_module.finite_chunks
    calls: list[tuple[int, int]] = []

    def interrupted(*args, **kwargs):
        compute = real(*args, **kwargs)

        def wrapped(start: int, end: int) -> dict[str, torch.Tensor]:
            if len(calls) == 2:
                raise KeyboardInterrupt("killed")
            calls.append((start, end))
            return compute(start, end)

        return wrapped

    monkeypatch.setattr(source_module, "finite_chunks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_or_build(teachers, data, dcfg, mcfg, tmp_path / "cache", chunk_samples=8)
    store = CacheStore(tmp_path / "cache", cache_spec(teachers, data.train, dcfg, mcfg, 10))
    assert store.status() == "partial" and not store.is_complete()
    assert not store.marker_path.exists() and not store.data_path.exists()
    assert store.done_chunks() == [0, 1]
    manifest = json.loads(store.manifest_path.read_text())
    assert manifest["key"] == store.spec.key and manifest["chunk_samples"] == 8

    def counting(*args, **kwargs):
        compute = real(*args, **kwargs)

        def wrapped(start: int, end: int) -> dict[str, torch.Tensor]:
            calls.append((start, end))
            return compute(start, end)

        return wrapped

    calls.clear()
    monkeypatch.setattr(source_module, "finite_chunks", counting)
    resumed = open_or_build(teachers, data, dcfg, mcfg, tmp_path / "cache", chunk_samples=5)
    assert calls == [(16, 24), (24, 32), (32, 40)], "only the missing chunks, with the manifest's chunking"
    assert store.is_complete(verify=True) and store.done_chunks() == []
    fresh = open_or_build(teachers, data, dcfg, mcfg, tmp_path / "fresh")
    assert torch.equal(resumed.values.cpu(), fresh.values.cpu())


def test_a_damaged_or_unmarked_cache_is_rebuilt(tmp_path: Path) -> None:
    dcfg = data_cfg(augment="flip")
    data = toy_data(dcfg)
    teachers = toy_teachers()
    first = open_or_build(teachers, data, dcfg, method_cfg(), tmp_path)
    reference = first.values.clone()
    store = CacheStore(tmp_path, first.spec)
    with open(store.data_path, "r+b") as handle:  # truncated tensor file: size no longer matches
        handle.truncate(100)
    assert store.status() == "partial"
    torch.testing.assert_close(open_or_build(teachers, data, dcfg, method_cfg(), tmp_path).values, reference)
    store.marker_path.unlink()  # killed between the tensor file and the marker
    assert store.status() == "partial"
    torch.testing.assert_close(open_or_build(teachers, data, dcfg, method_cfg(), tmp_path).values, reference)
    assert store.is_complete(verify=True)


def _flip_value_byte(path: Path, values: torch.Tensor) -> int:
    """Flip one byte inside the stored bytes of `values` (the file keeps its size); return its offset."""
    data = bytearray(path.read_bytes())
    offset = bytes(data).find(values.contiguous().view(torch.uint8).numpy().tobytes()) + values.numel()
    assert offset > values.numel(), "the tensor's bytes are stored as they are"
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
    return offset


def test_a_cache_with_flipped_bytes_is_rebuilt_not_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dcfg = data_cfg(augment="flip")
    data = toy_data(dcfg)
    teachers = toy_teachers()
    first = open_or_build(teachers, data, dcfg, method_cfg(), tmp_path)
    store = CacheStore(tmp_path, first.spec)
    reference, pristine = first.values.clone(), store.data_path.read_bytes()
    marker = json.loads(store.marker_path.read_text())
    assert marker["checksums"]["algorithm"] == "crc32" and len(marker["checksums"]["blocks"]) == 1

    _flip_value_byte(store.data_path, store.load(mmap=False)["values"])
    assert store.data_path.stat().st_size == len(pristine) and store.status() == "complete"  # size alone: fooled
    damaged = store.load(mmap=False)["values"].reshape(reference.shape)
    assert (damaged != reference).sum() == 1, "torch.load reads the damaged value without complaint"
    assert store.problem().startswith("soft_labels.pt is damaged: block 0 of 1 (bytes 0..")
    assert store.open() is None and not store.is_complete(verify=True)

    calls: list[tuple[int, int]] = []
    real = source_module.finite_chunks

    def counting(*args, **kwargs):
        compute = real(*args, **kwargs)

        def wrapped(start: int, end: int) -> dict[str, torch.Tensor]:
            calls.append((start, end))
            return compute(start, end)

        return wrapped

    monkeypatch.setattr(source_module, "finite_chunks", counting)
    rebuilt = open_or_build(teachers, data, dcfg, method_cfg(), tmp_path)
    assert calls == [(0, data.train.num_samples)], "every entry is computed again"
    assert torch.equal(rebuilt.values, reference)
    assert store.data_path.read_bytes() == pristine and store.is_complete(verify=True)


def test_a_cache_marked_before_block_checksums_is_checked_by_its_sha256(tmp_path: Path) -> None:
    dcfg = data_cfg(augment="flip")
    data = toy_data(dcfg)
    teachers = toy_teachers()
    first = open_or_build(teachers, data, dcfg, method_cfg(), tmp_path)
    store = CacheStore(tmp_path, first.spec)
    marker = json.loads(store.marker_path.read_text())
    del marker["checksums"]
    store.marker_path.write_text(json.dumps(marker))
    assert store.problem() is None
    _flip_value_byte(store.data_path, first.values.cpu())
    assert store.problem() == "soft_labels.pt does not match the SHA-256 its marker records"
    assert torch.equal(open_or_build(teachers, data, dcfg, method_cfg(), tmp_path).values, first.values)
    assert "checksums" in json.loads(store.marker_path.read_text()), "the rebuilt cache has block checksums"


def test_a_cache_damaged_again_right_after_its_build_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meal.errors import MealError
    from meal.softlabels import integrity
    from meal.softlabels import store as store_module

    def wrong(path: Path, block_bytes: int = integrity.BLOCK_BYTES) -> integrity.FileDigests:
        digests = integrity.file_digests(path, block_bytes)
        return integrity.FileDigests(block_bytes, [c ^ 1 for c in digests.blocks], digests.sha256)

    monkeypatch.setattr(store_module, "file_digests", wrong)  # a disk that does not keep what was written
    dcfg = data_cfg(augment="flip")
    with pytest.raises(MealError) as info:
        open_or_build(toy_teachers(), toy_data(dcfg), dcfg, method_cfg(), tmp_path)
    message = str(info.value)
    assert message.startswith(f"soft-label cache {tmp_path}/")
    assert ": soft_labels.pt is damaged: block 0 of 1 (bytes 0.." in message
    assert message.endswith(
        f"right after it was built (check the disk it is on, then delete {message.split()[2][:-1]} to build it again)"
    )


def _image_folder(root: Path, classes: int = 3, per_class: int = 3) -> None:
    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = 20 + 4 * i, 28 - 2 * c
                pixels = torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"img{i}.png")


def test_folder_cache_replays_stored_crop_boxes(tmp_path: Path) -> None:
    _image_folder(tmp_path / "images")
    dcfg = OmegaConf.structured(
        DataConfig(
            name="imagefolder",
            root=str(tmp_path / "images"),
            num_classes=3,
            in_channels=3,
            image_size=16,
            resize=18,
            batch_size=4,
            eval_batch_size=8,
            workers=0,
            augment="random_resized_crop_flip",
            on_device=False,
            mean=[0.5, 0.5, 0.5],
            std=[0.25, 0.25, 0.25],
        )
    )
    data = build_data(dcfg, tmp_path, 0, torch.device("cpu"))
    teachers = [Teacher(f"t{s}", toy_teacher(s, channels=3, size=16, classes=3)) for s in (1, 2)]
    cached = open_or_build(teachers, data, dcfg, method_cfg(cache_crops=3, cache_dtype="float32"), tmp_path / "c")
    assert cached.spec.kind == "crops" and cached.spec.slots == 3
    boxes = torch.load(cached.path / "soft_labels.pt", weights_only=True)["boxes"]
    assert boxes.shape == (9, 3, 5)
    models = [t.model for t in teachers]
    slots_seen = set()
    for epoch in range(2):
        data.train.set_epoch(epoch)
        for batch in data.train:
            assert batch.aug.shape[1] == 6
            for index, aug in zip(batch.index.tolist(), batch.aug.tolist()):
                row = int(cached.rows[index])
                assert aug[:5] == boxes[row, aug[5]].tolist(), "a stored box is replayed"
                slots_seen.add(aug[5])
            assert_close(cached.targets(batch), ensemble_targets(models, batch.x, 1.0), atol=1e-5, rtol=1e-5)
    assert slots_seen == {0, 1, 2}
    data.train.dataset.set_replay(None)
    assert next(iter(data.train)).aug.shape[1] == 5


@pytest.mark.slow
def test_command_builds_the_cache_ahead_and_finds_it_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from meal.softlabels.__main__ import main

    paths = save_teachers(tmp_path)
    members = ",".join(f"{{arch:fmnist_tiny,checkpoint:'{p}'}}" for p in paths)
    args = [
        "--json",
        "method=kd",
        "data=synthetic",
        "data.in_channels=1",
        "data.image_size=12",
        "data.train_size=30",
        "data.test_size=8",
        "data.mean=[0.5]",
        "data.std=[0.25]",
        "data.augment=pad_crop_flip",
        "data.pad=1",
        "teachers=none",
        f"teachers.members=[{members}]",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["complete"] and first["slots"] == 18 and first["samples"] == 30 and first["kind"] == "finite"
    assert Path(first["cache_dir"]).parent == tmp_path / "cache"
    assert main(["--verify", *args]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["cache_dir"] == first["cache_dir"] and again["key"] == first["key"]
    assert main([*args, "method.temperature=2.0"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] != first["key"]
