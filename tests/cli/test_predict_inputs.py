"""predict on special inputs: runs trained with scan, 16-bit and float images, --top, FIFOs and
decompression bombs, a workdir whose record names another model."""

import os
import re
import struct
import time
import zlib

import numpy as np
from PIL import Image
import pytest

from sharesnet_jax import predict, train
from tests.small_run import _assert_one_line, _cli, _edit_records, small


# --------------------------------------------------------------------------------------------
# Prediction.

def test_predict_loads_a_run_trained_with_scan(tmp_path, data_dir):
    workdir = tmp_path / "scan"
    # ShaResNet-14: two blocks per stage, so the scanned layout differs from the loop's.
    train.train_and_evaluate(small(data_dir, model="cifar_sharesnet14", stage_impl="scan",
                                   num_train_steps=1, eval_every_steps=1), str(workdir))
    predictor = predict.load(str(workdir))
    probabilities = predictor([np.zeros((20, 20, 3), np.uint8)])
    assert probabilities.shape == (1, 10) and np.isclose(probabilities.sum(), 1, atol=1e-5)


def test_predict_scales_16_bit_and_float_images(tmp_path):
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    eight = np.round(ramp * 255).astype(np.uint8)
    Image.fromarray(np.round(ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "f.tiff")
    for name in ("g16.png", "f.tiff"):
        image = predict.read_image(str(tmp_path / name))
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert np.abs(image[..., 0].astype(int) - eight).max() <= 1, name
    Image.fromarray((ramp * 300).astype(np.float32)).save(tmp_path / "big.tiff")
    with pytest.raises(ValueError, match=r"float image .* values outside \[0, 1\]"):
        predict.read_image(str(tmp_path / "big.tiff"))
    # Within 0..255 but beyond 1: not a [0, 1] image either (x255 would saturate it).
    Image.fromarray((ramp * 200).astype(np.float32)).save(tmp_path / "mid.tiff")
    with pytest.raises(ValueError, match=r"float image .* values outside \[0, 1\]"):
        predict.read_image(str(tmp_path / "mid.tiff"))


@pytest.mark.parametrize("top", ["0", "-3"])
def test_predict_top_must_be_positive(trained, tmp_path, capsys, top):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert predict.main(["--workdir", str(trained[0]), f"--top={top}", str(image)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --top={top} must be at least 1"


# --------------------------------------------------------------------------------------------
# predict on special inputs: one line for that input, the others still predicted.

def _png_header_only(path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR claiming width x height, then one empty IDAT: a few dozen
    bytes on disk that decode to width * height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                + chunk(b"IEND", b""))


def test_predict_refuses_special_inputs_and_predicts_the_rest(trained, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    os.mkfifo(tmp_path / "fifo.png")
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)  # 900 Mpx: PIL's own limit refuses
    _png_header_only(tmp_path / "big.png", 11000, 11000)  # 121 Mpx: between PIL's two limits
    (tmp_path / "a_directory.png").mkdir()
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    bad = ["fifo.png", "bomb.png", "big.png", "a_directory.png", "truncated.png", "missing.png"]
    started = time.time()
    result = _cli(["--workdir", str(trained[0]), str(good), *[str(tmp_path / n) for n in bad],
                   str(good)], module="sharesnet_jax.predict", timeout=120)
    assert time.time() - started < 120
    lines = _assert_one_line(result, 1, r"^error: \S+: cannot read image: ", count=len(bad))
    by_name = {os.path.basename(line.split(":")[1].strip()): line for line in lines}
    assert sorted(by_name) == sorted(bad)
    assert "it is a FIFO, not a regular file" in by_name["fifo.png"]
    assert "it is a directory, not a regular file" in by_name["a_directory.png"]
    assert "No such file or directory" in by_name["missing.png"]
    assert "11000x11000 pixels, more than the 100,000,000" in by_name["big.png"]
    assert re.search(r"DecompressionBomb|30000x30000", by_name["bomb.png"])
    predicted = [line for line in result.stdout.splitlines() if line.startswith(str(good))]
    assert len(predicted) == 2, result.stdout


def test_predict_on_a_workdir_whose_record_names_another_model(workdir, tmp_path):
    _edit_records(workdir, lambda record: record["config"].update(model="cifar_sharesnet14"))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    result = _cli(["--workdir", str(workdir), str(image)], module="sharesnet_jax.predict",
                  timeout=120)
    _assert_one_line(result, 2, r"the checkpoint in \S+ (has no entry|holds) \S+.* the "
                                r"cifar_sharesnet14 its record names|written by a different "
                                r"model")
