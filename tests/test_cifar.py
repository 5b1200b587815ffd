"""The CIFAR-10 python-format reader: layout, archive and folder, checksums, safe unpickling."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from siba.data import CIFAR10_CLASSES, RestrictedUnpickler, load_cifar10, load_dataset, restricted_loads
from siba.data.cifar import CIFAR10_FILES_MD5
from siba.errors import SibaError

PER_BATCH = 4  # images per synthetic batch: 20 training and 4 test images
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING), as the official batches were written.

    Python 3's protocol 2 stores bytes through ``_codecs.encode``; the Python 2 pickles
    of the real CIFAR-10 hold plain strings, which the reader must accept.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # the originals name numpy's reconstructor by its numpy 1.x module
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def batch_arrays(index: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(index)
    data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
    labels = [int((index * PER_BATCH + i) % 10) for i in range(PER_BATCH)]
    return data, labels


def batch_pickle(index: int, name: str) -> bytes:
    data, labels = batch_arrays(index)
    entry = {b"batch_label": f"synthetic {name}".encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{index}_{i}.png".encode() for i in range(PER_BATCH)]}
    return py2_dumps(entry)


def meta_pickle() -> bytes:
    return py2_dumps({b"num_cases_per_batch": PER_BATCH, b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                      b"num_vis": 3072})


def write_folder(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate(BATCHES):
        (folder / name).write_bytes(batch_pickle(i, name))
    (folder / "batches.meta").write_bytes(meta_pickle())
    (folder / "readme.html").write_text("<html></html>")
    return folder


def write_archive(root: Path) -> Path:
    folder = write_folder(root / "src")
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


def expected_split(indices: range) -> tuple[np.ndarray, list[int]]:
    parts = [batch_arrays(i) for i in indices]
    return np.concatenate([p[0] for p in parts]), [v for p in parts for v in p[1]]


def check_splits(d) -> None:
    assert d.train.images.shape == (5 * PER_BATCH, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (PER_BATCH, 3, 32, 32)
    assert d.classes == CIFAR10_CLASSES
    rows, labels = expected_split(range(5))
    assert d.train.labels.tolist() == labels
    test_rows, test_labels = expected_split(range(5, 6))
    assert d.test.labels.tolist() == test_labels
    # each row is the R plane, then G, then B; each plane 32×32 row-major
    for n in (0, 7, 19):
        for c, y, x in ((0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 5, 7), (2, 31, 30), (2, 17, 3)):
            assert d.train.images[n, c, y, x].item() == rows[n, c * 1024 + y * 32 + x]
    manual = np.stack([rows[:, c * 1024:(c + 1) * 1024].reshape(-1, 32, 32) for c in range(3)], axis=1)
    assert np.array_equal(d.train.images.numpy(), manual)
    assert np.array_equal(d.test.images.numpy(), test_rows.reshape(-1, 3, 32, 32))


# --------------------------------------------------------------------------- reading


def test_py2_style_pickle_is_what_we_think(tmp_path):
    blob = batch_pickle(0, "data_batch_1")
    assert b"_codecs" not in blob and b"cnumpy.core.multiarray\n_reconstruct" in blob
    entry = restricted_loads(blob)
    assert set(entry) == {"batch_label", "labels", "data", "filenames"}  # latin-1 keys
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (PER_BATCH, 3072)


def test_pixel_layout_single_pixel(tmp_path):
    # one bright pixel at G channel, row 5, column 7 of the first training image
    folder = write_folder(tmp_path)
    data, labels = batch_arrays(0)
    data[:] = 0
    data[0, 1024 + 5 * 32 + 7] = 255
    (folder / "data_batch_1").write_bytes(py2_dumps({b"data": data, b"labels": labels}))
    d = load_cifar10(folder, verify=False)
    img = d.train.images[0]
    assert img[1, 5, 7].item() == 255
    assert int((img != 0).sum()) == 1


def test_load_from_folder(tmp_path):
    folder = write_folder(tmp_path)
    for root in (folder, tmp_path):  # the batches folder, or the folder that holds it
        d = load_cifar10(root, download=False, verify=False)
        check_splits(d)
        assert d.name == "cifar10"


def test_load_from_archive(tmp_path):
    archive = write_archive(tmp_path)
    for root in (archive, tmp_path):  # the archive, or the folder that holds it
        d = load_cifar10(root, download=False, verify=False)
        check_splits(d)
    ref = load_cifar10(tmp_path / "src", verify=False)
    assert torch.equal(ref.train.images, d.train.images)


def test_protocol_4_batches_load_too(tmp_path):
    folder = write_folder(tmp_path)
    for i, name in enumerate(BATCHES):
        data, labels = batch_arrays(i)
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=4))
    check_splits(load_cifar10(folder, verify=False))


def test_verify_refuses_files_without_the_official_md5(tmp_path):
    folder = write_folder(tmp_path / "f")
    with pytest.raises(SibaError, match="MD5"):
        load_cifar10(folder)  # verify=True is the default
    archive = write_archive(tmp_path / "a")
    with pytest.raises(SibaError, match="MD5") as exc:
        load_cifar10(archive, verify=True)
    assert str(archive) in str(exc.value)
    # load_dataset reads a CIFAR-10 path with verification on
    with pytest.raises(SibaError, match="MD5"):
        load_dataset(archive)
    with pytest.raises(SibaError, match="MD5"):
        load_dataset(folder)


def test_missing_data_without_download(tmp_path):
    with pytest.raises(SibaError, match="not found") as exc:
        load_cifar10(tmp_path / "nothing", download=False)
    assert str(tmp_path / "nothing" / "cifar-10-python.tar.gz") in str(exc.value)
    assert not (tmp_path / "nothing").exists()


def test_default_root_is_the_cache(tmp_path):
    from siba.runtime import cache_dir

    assert not (cache_dir() / "cifar10" / "cifar-10-python.tar.gz").exists()
    with pytest.raises(SibaError) as exc:
        load_cifar10(download=False)
    assert str(cache_dir() / "cifar10" / "cifar-10-python.tar.gz") in str(exc.value)


def test_missing_or_malformed_batches(tmp_path):
    folder = write_folder(tmp_path / "a")
    (folder / "data_batch_3").unlink()
    with pytest.raises(SibaError, match="data_batch_3"):
        load_cifar10(folder, verify=False)

    folder = write_folder(tmp_path / "b")
    data, labels = batch_arrays(0)
    (folder / "data_batch_2").write_bytes(py2_dumps({b"data": data[:, :100], b"labels": labels}))
    with pytest.raises(SibaError, match="N×3072"):
        load_cifar10(folder, verify=False)

    folder = write_folder(tmp_path / "c")
    (folder / "test_batch").write_bytes(py2_dumps({b"data": data, b"labels": labels[:-1]}))
    with pytest.raises(SibaError, match="labels"):
        load_cifar10(folder, verify=False)

    folder = write_folder(tmp_path / "d")
    (folder / "data_batch_1").write_bytes(py2_dumps([1, 2, 3]))
    with pytest.raises(SibaError, match="not a CIFAR-10 batch"):
        load_cifar10(folder, verify=False)

    folder = write_folder(tmp_path / "e")
    (folder / "data_batch_1").write_bytes(b"\x80\x02}q\x00(U")  # truncated
    with pytest.raises(SibaError, match="data_batch_1"):
        load_cifar10(folder, verify=False)

    archive = tmp_path / "f" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        src = write_folder(tmp_path / "g")
        tar.add(src / "test_batch", arcname="cifar-10-batches-py/test_batch")
    with pytest.raises(SibaError, match="lacks"):
        load_cifar10(archive, verify=False)


def test_wrong_size_request_for_cifar_python_format(tmp_path, monkeypatch):
    # load_dataset checks the files' MD5; skip that here to reach the size check
    import siba.data as data_mod

    real = data_mod.load_cifar10
    monkeypatch.setattr(data_mod, "load_cifar10", lambda path, download=False: real(path, download=download,
                                                                                    verify=False))
    folder = write_folder(tmp_path)
    assert load_dataset(folder).image_shape == (3, 32, 32)
    assert load_dataset(folder, size=32).image_shape == (3, 32, 32)
    with pytest.raises(SibaError, match="32×32"):
        load_dataset(folder, size=64)  # the python format is never resized


# --------------------------------------------------------------------------- hostile pickles


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload_cls", [_SystemPayload, _EvalPayload])
@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_refuses_code(tmp_path, payload_cls, protocol):
    # the payload is real: an ordinary unpickler runs it
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(payload_cls(control), protocol=protocol))
    assert control.exists()

    marker = tmp_path / "pwned"
    blob = pickle.dumps({"data": payload_cls(marker), "labels": [0]}, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        restricted_loads(blob)
    with pytest.raises(pickle.UnpicklingError):
        RestrictedUnpickler(io.BytesIO(blob), encoding="latin1").load()
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                         ("builtins", "getattr"), ("numpy", "load"), ("subprocess", "Popen"),
                                         ("_codecs", "decode"), ("numpy.core.multiarray", "scalar")])
def test_restricted_unpickler_refuses_other_globals(module, name):
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        RestrictedUnpickler(io.BytesIO(b"")).find_class(module, name)


def test_restricted_unpickler_allows_only_numpy_arrays():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = restricted_loads(pickle.dumps({"a": arr, "b": [1, 2], "c": b"x", "d": "y"}, protocol=4))
    assert np.array_equal(out["a"], arr) and out["b"] == [1, 2] and out["c"] == b"x" and out["d"] == "y"


def test_python3_protocol2_pickles_load_and_codecs_is_latin1_only():
    arr = np.arange(12, dtype=np.uint8).reshape(2, 6)
    out = restricted_loads(pickle.dumps({"data": arr, "labels": [1, 2], "name": b"batch"}, protocol=2))
    assert np.array_equal(out["data"], arr) and out["name"] == b"batch"
    encode = RestrictedUnpickler(io.BytesIO(b"")).find_class("_codecs", "encode")
    assert encode("\xff", "latin1") == b"\xff"
    with pytest.raises(pickle.UnpicklingError, match="latin-1"):
        encode("x", "utf-16")


def test_hostile_batch_file_gives_a_siba_error(tmp_path):
    folder = write_folder(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps(_SystemPayload(marker), protocol=2))
    with pytest.raises(SibaError, match="refusing to load data_batch_3"):
        load_cifar10(folder, verify=False)
    assert not marker.exists()

    # the same inside an archive
    archive = tmp_path / "evil" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _EvalPayload(marker)}, protocol=2))
    (folder / "data_batch_3").write_bytes(batch_pickle(2, "data_batch_3"))
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(SibaError, match="refusing to load test_batch"):
        load_cifar10(archive, verify=False)
    assert not marker.exists()


def test_known_file_checksums_cover_every_batch():
    assert sorted(CIFAR10_FILES_MD5) == sorted(BATCHES)
