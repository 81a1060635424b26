"""Peak memory of ``edgekit convert`` on a 224x224 ImageNet-size model, for 100 and 1,000 calibration images.

    .venv/bin/python benchmarks/bench_convert_memory.py                 # 100 and 1,000 samples
    .venv/bin/python benchmarks/bench_convert_memory.py --samples 100 200 1000 --keep /tmp/convert-mem

The model is a MobileNet-like ONNX graph built here (NCHW as PyTorch exports it; fixed-seed random weights,
no download): depthwise-separable blocks down to a 28x28x8 bottleneck named ``code``, then two blocks, global
pooling and a 1000-way classifier. Calibration images are fixed-seed random pixels normalised like ImageNet,
saved as ``.npy``. Each run is a fresh ``edgekit convert`` child (``--target cpu``, no ``--eval``, so parity
also runs on all N samples) and its peak RSS is that child's own ``ru_maxrss`` (``os.wait4``). Convert must
stream calibration and parity batches: the second figure may be at most 1.5x the first (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MAX_RATIO = 1.5
SIZE = 224


def _conv(nodes, inits, rng, name, x, c_in, c_out, kernel=1, stride=1, group=1, relu=True):
    """Conv (+ Relu) with He-initialised weights; returns the output tensor name."""
    from onnx import numpy_helper
    from onnx.helper import make_node

    fan_in = c_in // group * kernel * kernel
    weight = rng.normal(0, np.sqrt(2.0 / fan_in), (c_out, c_in // group, kernel, kernel)).astype(np.float32)
    inits += [numpy_helper.from_array(weight, f"{name}.weight"),
              numpy_helper.from_array(np.full(c_out, 0.01, np.float32), f"{name}.bias")]
    pad = kernel // 2
    out = f"/{name}/Conv_output_0"
    nodes.append(make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=f"/{name}/Conv",
                           kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4, group=group))
    if not relu:
        return out
    nodes.append(make_node("Relu", [out], [f"/{name}/Relu_output_0"], name=f"/{name}/Relu"))
    return f"/{name}/Relu_output_0"


def _block(nodes, inits, rng, name, x, c_in, c_out, stride):
    x = _conv(nodes, inits, rng, f"{name}.dw", x, c_in, c_in, kernel=3, stride=stride, group=c_in)
    return _conv(nodes, inits, rng, f"{name}.pw", x, c_in, c_out)


def build_model(path: Path) -> None:
    """MobileNet-like 224x224 classifier with a ``code`` bottleneck (28x28x8 = 6,272 int8 bytes per image)."""
    import onnx
    from onnx import TensorProto
    from onnx.helper import make_graph, make_model, make_node, make_opsetid, make_tensor_value_info

    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    x = _conv(nodes, inits, rng, "stem", "image", 3, 32, kernel=3, stride=2)                  # 112
    for name, c_in, c_out, stride in (("b1", 32, 64, 1), ("b2", 64, 96, 2), ("b3", 96, 128, 2)):  # 112, 56, 28
        x = _block(nodes, inits, rng, name, x, c_in, c_out, stride)
    x = _conv(nodes, inits, rng, "enc", x, 128, 8)
    nodes.append(make_node("Identity", [x], ["code"], name="code"))
    x = _conv(nodes, inits, rng, "dec", "code", 8, 128)
    for name, c_in, c_out, stride in (("b4", 128, 256, 2), ("b5", 256, 256, 2)):               # 14, 7
        x = _block(nodes, inits, rng, name, x, c_in, c_out, stride)
    nodes += [make_node("GlobalAveragePool", [x], ["/pool/GlobalAveragePool_output_0"], name="/pool"),
              make_node("Flatten", ["/pool/GlobalAveragePool_output_0"], ["/Flatten_output_0"], name="/Flatten")]
    weight = rng.normal(0, np.sqrt(1.0 / 256), (1000, 256)).astype(np.float32)
    inits += [onnx.numpy_helper.from_array(weight, "fc.weight"),
              onnx.numpy_helper.from_array(np.zeros(1000, np.float32), "fc.bias")]
    nodes.append(make_node("Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["logits"], transB=1, name="/fc"))
    image = make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    graph = make_graph(nodes, "mobilenet_like", [image], [make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
                       inits)
    model = make_model(graph, opset_imports=[make_opsetid("", 17)], producer_name="bench_convert_memory")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_samples(path: Path, count: int) -> None:
    """Fixed-seed random RGB pixels, ImageNet-normalised NCHW float32, written in chunks (bounded memory here)."""
    rng = np.random.default_rng(count)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, 3, SIZE, SIZE))
    for start in range(0, count, 50):
        pixels = rng.integers(0, 256, (min(50, count - start), 3, SIZE, SIZE)).astype(np.float32) / 255.0
        out[start : start + len(pixels)] = (pixels - mean) / std
    out.flush()
    del out


def peak_rss_mib(model: Path, calib: Path, count: int, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one fresh ``edgekit convert`` child."""
    edgekit = Path(sys.executable).with_name("edgekit")
    argv = [str(edgekit), "convert", str(model), "--split", "code", "--calib", str(calib), "--target", "cpu",
            "--calib-samples", str(count), "--eval-samples", str(count), "--latency-runs", "0", "--min-agreement", "0",
            "-o", str(out), "--force"]
    start = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"convert with {count} samples failed (exit {child.returncode}):\n{stderr[-2000:]}")
    return usage.ru_maxrss / 1024.0, time.monotonic() - start  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 1000], help="calibration sample counts")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-convert-mem-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        model = root / "mobilenet_like.onnx"
        build_model(model)
        results = []
        for count in args.samples:
            calib = root / f"calib_{count}.npy"
            write_samples(calib, count)
            rss, seconds = peak_rss_mib(model, calib, count, root / f"bundle_{count}")
            results.append((count, rss))
            print(f"{count:6d} calibration images ({calib.stat().st_size / 2**20:7.1f} MiB of float32): "
                  f"peak RSS {rss:7.1f} MiB, {seconds:5.1f} s", flush=True)
            calib.unlink()
    ratio = results[-1][1] / results[0][1]
    print(f"peak RSS ratio {results[-1][0]} / {results[0][0]} samples: {ratio:.2f} (must be <= {MAX_RATIO})")
    return 0 if ratio <= MAX_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
