import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from ccql_utils.core import data as D
from ccql_utils.core.loader import DeviceLoader, StackedLoader
from ccql_utils.core.data import (DataError, load_cifar100, locate_cifar100, make_subset,
                             random_classes, select_classes, write_synthetic_cifar100)

MAMMALS = ["bear", "beaver", "camel", "cattle", "chimpanzee", "dolphin", "elephant", "fox",
           "hamster", "kangaroo", "leopard", "lion", "mouse", "otter", "porcupine", "possum",
           "rabbit", "raccoon", "seal", "shrew", "skunk", "squirrel", "tiger", "whale", "wolf"]


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_copy_is_verified_and_complete(real_data):
    assert real_data.verified
    assert real_data.train_images.shape == (50000, 3, 32, 32)
    assert real_data.test_images.shape == (10000, 3, 32, 32)
    assert np.bincount(real_data.train_fine).tolist() == [500] * 100
    mean = real_data.train_images.reshape(50000, 3, -1).mean(axis=(0, 2)) / 255
    assert np.allclose(mean, D.CIFAR100_MEAN, atol=1e-4)
    assert tuple(real_data.fine_to_coarse) == D.FINE_TO_COARSE


@pytest.mark.realdata
def test_mammal_subset_is_the_25_classes_of_the_five_mammal_superclasses(real_data):
    indices = select_classes("mammals", real_data)
    assert [real_data.fine_names[i] for i in indices] == MAMMALS
    subset = make_subset(real_data, indices)
    assert len(subset.train_labels) == 12500 and len(subset.test_labels) == 2500


# ----------------------------------------------------------------------------- locating & checking
def test_explicit_root_without_a_copy_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="--data-root"):
        locate_cifar100(tmp_path)


def test_environment_variable_is_used(tmp_path, monkeypatch, synthetic_root):
    monkeypatch.setenv(D.DATA_ROOT_ENV, str(synthetic_root))
    assert locate_cifar100() == synthetic_root / "cifar-100-python"
    monkeypatch.setenv(D.DATA_ROOT_ENV, str(tmp_path))
    with pytest.raises(DataError, match="CCQL_DATA_ROOT"):
        locate_cifar100()


def test_root_may_be_the_cifar_folder_itself(synthetic_root):
    folder = synthetic_root / "cifar-100-python"
    assert locate_cifar100(folder) == folder


def test_failed_download_says_how_to_point_at_a_copy(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.delenv(D.DATA_ROOT_ENV, raising=False)
    monkeypatch.setattr(D, "DEFAULT_DATA_ROOT", tmp_path / "data")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataError, match="Could not download.*--data-root PATH"):
        locate_cifar100()
    with pytest.raises(DataError, match="not found"):
        locate_cifar100(download=False)


def test_incomplete_default_copy_is_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.delenv(D.DATA_ROOT_ENV, raising=False)
    monkeypatch.setattr(D, "DEFAULT_DATA_ROOT", tmp_path)
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"partial")
    with pytest.raises(DataError, match="not overwritten"):
        locate_cifar100()
    assert (tmp_path / "cifar-100-python" / "train").read_bytes() == b"partial"


def test_synthetic_copy_fails_content_verification(synthetic_root):
    with pytest.raises(DataError, match="truncated|published"):
        load_cifar100(synthetic_root, verify=True)


def test_truncated_pickle_is_refused(tmp_path, synthetic_root):
    folder = shutil.copytree(synthetic_root / "cifar-100-python", tmp_path / "cifar-100-python")
    raw = (folder / "train").read_bytes()
    (folder / "train").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_cifar100(tmp_path, verify=False)


def test_structurally_wrong_pickle_is_refused(tmp_path, synthetic_root):
    folder = shutil.copytree(synthetic_root / "cifar-100-python", tmp_path / "cifar-100-python")
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": np.zeros((3, 100), np.uint8), "fine_labels": [0, 1, 2],
                     "coarse_labels": [0, 1, 2]}, f)
    with pytest.raises(DataError, match=r"uint8 \[N, 3072\]"):
        load_cifar100(tmp_path, verify=False)


@pytest.mark.realdata
def test_one_changed_pixel_fails_verification(tmp_path, real_data):
    folder = tmp_path / "cifar-100-python"
    shutil.copytree(real_data.folder, folder)
    os.chmod(folder / "test", 0o644)
    with open(folder / "test", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    raw["data"] = raw["data"].copy()
    raw["data"][123, 456] ^= 1
    with open(folder / "test", "wb") as f:
        pickle.dump(raw, f)
    with pytest.raises(DataError, match="sha256 mismatch"):
        load_cifar100(tmp_path)


# ----------------------------------------------------------------------------- subsets
def test_random_classes_are_pinned_for_seed_0():
    # Pinned so that a change of the draw (which would silently change every experiment) fails.
    assert random_classes(25, 0) == [4, 7, 15, 18, 20, 25, 33, 36, 37, 44, 45, 46, 57, 61, 63, 69,
                                     72, 74, 76, 78, 85, 87, 89, 91, 99]


def test_random_classes_depend_only_on_seed_and_k():
    assert random_classes(25, 3) == random_classes(25, 3)
    assert random_classes(25, 3) != random_classes(25, 4)
    assert set(random_classes(10, 7)) <= set(range(100)) and len(set(random_classes(10, 7))) == 10
    # prefix property of the keyed permutation: a smaller K draws a subset of a larger one
    assert set(random_classes(10, 7)) <= set(random_classes(40, 7))


def test_random_classes_are_uniform():
    counts = np.zeros(100)
    for seed in range(2000):
        counts[random_classes(25, seed)] += 1
    # each class is chosen with probability 1/4: 500 expected, sd ~19
    assert counts.min() > 420 and counts.max() < 580


@pytest.mark.parametrize("k", [1, 101, 2.5])
def test_impossible_class_counts(k):
    with pytest.raises(ValueError, match="2 <= k <= 100"):
        random_classes(k, 0)


def test_subset_kinds(synthetic_data):
    assert select_classes("all", synthetic_data) == list(range(100))
    assert [synthetic_data.fine_names[i] for i in select_classes("mammals", synthetic_data)] == MAMMALS
    assert select_classes(["wolf", "apple"], synthetic_data) == [0, 97]
    with pytest.raises(ValueError, match="unknown CIFAR-100 class names"):
        select_classes(["wolf", "unicorn"], synthetic_data)
    with pytest.raises(ValueError, match="unknown class subset"):
        select_classes("fish", synthetic_data)
    with pytest.raises(ValueError, match="needs k"):
        select_classes("random", synthetic_data)
    with pytest.raises(ValueError, match="K = 100"):
        select_classes("all", synthetic_data, k=25)


def test_subset_remaps_labels_in_ascending_original_order(synthetic_data):
    subset = make_subset(synthetic_data, [97, 3, 50])
    assert subset.class_indices == (3, 50, 97)
    assert subset.class_names == ("bear", "mouse", "wolf")
    original = synthetic_data.train_fine[np.isin(synthetic_data.train_fine, [3, 50, 97])]
    assert np.array_equal(np.array([3, 50, 97])[subset.train_labels], original)
    assert np.array_equal(subset.train_images,
                          synthetic_data.train_images[np.isin(synthetic_data.train_fine, [3, 50, 97])])
    assert len(subset.test_labels) == 30


def test_train_per_class_keeps_the_first_images_of_each_class(synthetic_data):
    subset = make_subset(synthetic_data, [3, 50], train_per_class=7)
    assert np.bincount(subset.train_labels).tolist() == [7, 7]
    first_bears = synthetic_data.train_images[synthetic_data.train_fine == 3][:7]
    assert np.array_equal(subset.train_images[subset.train_labels == 0], first_bears)
    assert len(subset.test_labels) == 20  # the test split is never capped
    with pytest.raises(ValueError, match="train_per_class must be an integer from 1 to 500"):
        make_subset(synthetic_data, [3, 50], train_per_class=0)


# ----------------------------------------------------------------------------- device loader
def small_loader(n=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    return DeviceLoader(images, np.arange(n) % 3, "cpu", seed=seed), images


def test_augmentation_is_a_padded_crop_with_optional_flip():
    loader, images = small_loader()
    indices, dy, dx, flip = loader.epoch_plan(epoch=0)
    out = loader.augmented_batch(indices, dy, dx, flip).numpy()
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for b in range(len(indices)):
        i, y, x = int(indices[b]), int(dy[b]), int(dx[b])
        crop = padded[i, :, y:y + 32, x:x + 32]
        expected = crop[:, :, ::-1] if bool(flip[b]) else crop
        assert np.array_equal(out[b], expected)


def test_epoch_plan_is_a_permutation_with_valid_offsets_and_depends_on_epoch():
    loader, _ = small_loader(n=1000)
    indices, dy, dx, flip = loader.epoch_plan(epoch=3)
    assert sorted(indices.tolist()) == list(range(1000))
    assert dy.min() >= 0 and dy.max() <= 8 and dx.min() >= 0 and dx.max() <= 8
    assert 0.4 < flip.float().mean() < 0.6
    again = loader.epoch_plan(epoch=3)
    assert all(torch.equal(a, b) for a, b in zip((indices, dy, dx, flip), again))
    assert not torch.equal(indices, loader.epoch_plan(epoch=4)[0])


def test_batches_cover_the_epoch_and_are_normalized():
    loader, images = small_loader(n=10)
    batches = list(loader.train_batches(epoch=0, batch_size=4))
    assert [len(l) for _, l in batches] == [4, 4, 2]
    evaluated = torch.cat([x for x, _ in loader.eval_batches(batch_size=4)])
    mean = torch.tensor(D.CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(D.CIFAR100_STD).view(1, 3, 1, 1)
    assert torch.allclose(evaluated, (torch.from_numpy(images).float() / 255 - mean) / std, atol=1e-5)


def test_only_training_pads_the_images():
    """The padded copy (1.56x the images) is made on the first training epoch, so a test split,
    which is only evaluated, never holds one."""
    loader, _ = small_loader(n=10)
    list(loader.eval_batches(batch_size=4))
    assert "padded" not in vars(loader)
    list(loader.train_batches(epoch=0, batch_size=4))
    assert vars(loader)["padded"].shape == (10, 3, 40, 40)


def test_a_last_batch_of_one_image_is_dropped():
    loader, _ = small_loader(n=9)
    assert [len(l) for _, l in loader.train_batches(epoch=0, batch_size=4)] == [4, 4]


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_stacked_loader_gives_each_run_exactly_its_own_loaders_batches(channels_last):
    """Run n's part of a stacked batch (channels 3n..3n+2, label column n) is its own loader's
    batch: same order, crops, flips and labels, in training (a last batch of 3) and evaluation."""
    rng = np.random.default_rng(0)
    loaders = [DeviceLoader(rng.integers(0, 256, (11, 3, 32, 32), dtype=np.uint8), rng.integers(0, 5, 11),
                            "cpu", seed=seed, channels_last=channels_last) for seed in (0, 1, 7)]
    stacked = StackedLoader(loaders)
    for batches in (lambda source: source.train_batches(epoch=2, batch_size=4),
                    lambda source: source.eval_batches(batch_size=4)):
        together = list(batches(stacked))
        alone = [list(batches(loader)) for loader in loaders]
        assert [len(labels) for _, labels in together] == [len(labels) for _, labels in alone[0]]
        for step, (images, labels) in enumerate(together):
            assert images.shape == (len(labels), 9, 32, 32) and labels.shape == (len(labels), 3)
            assert images.is_contiguous(memory_format=torch.channels_last) == channels_last
            for n, own in enumerate(alone):
                assert torch.equal(images[:, 3 * n:3 * n + 3], own[step][0])
                assert torch.equal(labels[:, n], own[step][1])


def test_a_stacked_loader_refuses_subsets_of_different_sizes():
    with pytest.raises(ValueError, match=r"subsets of one size, got \[10, 9\]"):
        StackedLoader([small_loader(10)[0], small_loader(9)[0]])


def test_loader_rejects_bad_arrays():
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(np.zeros((2, 3, 32, 32), np.float32), np.zeros(2), "cpu")


def test_synthetic_writer_produces_torchvision_layout(tmp_path):
    folder = write_synthetic_cifar100(tmp_path, train_per_class=2, test_per_class=1)
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    data = load_cifar100(tmp_path, verify=False)
    assert data.train_images.shape == (200, 3, 32, 32) and not data.verified


# ----------------------------------------------------------------------------- packed subsets
def test_a_packed_subset_gives_the_same_subset_and_run_ids_as_the_full_data(synthetic_data, tmp_path):
    from ccql_utils.core.packs import load_packed, pack_subset
    classes = random_classes(25, 0)
    path = pack_subset(synthetic_data, tmp_path / "k25.npz", classes)
    loaded = D.load_cifar100(str(path))  # a .npz data root is a packed subset
    assert not loaded.verified and len(loaded.train_images) == 25 * 40  # only these classes travel
    assert select_classes("random", loaded, 25, 0) == classes
    a, b = make_subset(synthetic_data, classes), make_subset(loaded, classes)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    mammals = select_classes("mammals", synthetic_data)
    packed = load_packed(pack_subset(synthetic_data, tmp_path / "m.npz", mammals, 10, 5))
    assert select_classes("mammals", packed) == mammals
    capped = make_subset(packed, mammals, 10, 5)
    assert np.array_equal(capped.train_images, make_subset(synthetic_data, mammals, 10, 5).train_images)


def test_a_packed_subset_refuses_classes_it_lacks_and_altered_pixels(real_data, tmp_path):
    from ccql_utils.core.packs import load_packed, pack_subset
    path = pack_subset(real_data, tmp_path / "all100.npz", range(100), 100, 20)
    assert path.stat().st_size < 40 * 2**20  # the K = 100 LR-probe subset fits a 64 MiB transfer
    packed = load_packed(path)
    assert packed.verified
    assert len(make_subset(packed, range(100), 100, 20).train_labels) == 10_000
    with pytest.raises(DataError, match="fewer than 500 train images"):
        make_subset(packed, range(100))  # all 500 per class asked of a 100-per-class pack
    with pytest.raises(DataError, match="fewer than"):
        make_subset(load_packed(pack_subset(real_data, tmp_path / "two.npz", [0, 1])), [0, 1, 2])
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_images"][0, 0, 0, 0] ^= 1
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="sha256"):
        load_packed(path)
