"""Where does an entropic re-encoder's int8 device half lose top-1 agreement with its float model? (validation)

    python examples/cifar10/int8_code.py sets [--out build/cifar10/qat]      # train10k.npz, val.npz, calib.npz
    python examples/cifar10/int8_code.py MODEL.keras [--out build/cifar10/qat]
    python examples/cifar10/int8_code.py MODEL.keras --convert BUNDLE    # + convert and the deployed test frames

The sets are the seeded shuffle of the 50,000 training images (data.py): the first 10,000 to train on (with
labels), images 45,000-46,999 as the validation split (never trained on by a 10,000-image run), the first 500
to calibrate. For MODEL (``edgekit reencode --method entropic`` on the ResNet20 teacher) it converts the device
half, the teacher's head alone and the encoder alone to int8 TFLite (rpi profile, convert's export), runs them
on the validation images, decodes every code with the float server half, and prints the top-1 agreement with
the float model for each, the share of code symbols that differ, and how far from a rounding boundary the
float latents of those symbols were (docs/reencode.md, "Quantization-aware training"). ``--convert`` also
converts MODEL as run.py does (rpi + ethos-u55-128, TFLite, ans, the benchmark's calibration and test sets under
build/cifar10/full/) and prints convert's agreement and the deployed bytes per frame and top-1 on the
benchmark's 2,000 test images (docs/results.md, "Quantization-aware training").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import load_split, shuffled  # noqa: E402
from teacher import preprocess  # noqa: E402

TRAIN, VALIDATION, CALIB = slice(0, 10000), slice(45000, 47000), slice(0, 500)


def write_sets(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y = shuffled(*load_split("train"))
    np.savez(out / "train10k.npz", x=preprocess(x[TRAIN]), y=y[TRAIN])
    np.savez(out / "val.npz", x=preprocess(x[VALIDATION]), y=y[VALIDATION])
    np.savez(out / "calib.npz", x=preprocess(x[CALIB]))
    print(f"wrote {out}/train10k.npz, val.npz, calib.npz")


def _int8(keras, inputs, outputs, calib: np.ndarray, folder: Path, name: str):
    """``Model(inputs, outputs)`` as convert exports an rpi TFLite device half; returns a batch runner."""
    from edgekit.converters.targets import TfliteOptions
    from edgekit.converters.tflite_export import export_tflite
    from edgekit.runtime import open_device_runner

    model = keras.Model(inputs, outputs)
    path = folder / f"{name}.tflite"
    export_tflite(model, tuple(model.inputs[0].shape[1:]), model.inputs[0].name, calib, TfliteOptions(), path)
    runner = open_device_runner(path)
    scale, zero = runner.code_quant
    return lambda x: (runner.run(x).astype(np.float32) - zero) * scale


def diagnose(model_path: Path, sets: Path) -> None:
    import keras

    from edgekit.converters.halves import batched
    from edgekit.reencode import layers  # noqa: F401 - registers IntegerCode

    with np.load(sets / "val.npz") as val:
        x, y = val["x"], val["y"]
    with np.load(sets / "calib.npz") as c:
        calib = c["x"]
    model = keras.models.load_model(model_path, compile=False)
    head, tail, code_layer = (model.get_layer(n) for n in ("teacher_head", "teacher_tail", "code"))
    encoder = [model.get_layer(n) for n in ("reencode_enc1", "reencode_enc2")]
    decoder = [model.get_layer(n) for n in ("reencode_dec1", "reencode_dec2")]

    def chain(stack, t):
        for layer in stack:
            t = layer(t, training=False)
        return t

    run = lambda fn: batched(lambda b: np.asarray(fn(b)))  # noqa: E731
    features = run(head)(x)
    latent = run(lambda f: chain(encoder, f))(features)
    code = run(code_layer)(latent)
    server = run(lambda c: tail(chain(decoder, c), training=False))
    top_float = server(code).argmax(1)
    print(f"{model_path.name}: float model top-1 {np.mean(top_float == y):.4f} on {len(x)} validation images")

    def row(what: str, other: np.ndarray) -> np.ndarray:
        differ = other != code
        agree = np.mean(server(other).argmax(1) == top_float)
        print(f"  {what:<44} agreement {agree:.4f}, symbols differing {differ.mean():.4%} "
              f"({differ.reshape(len(x), -1).sum(1).mean():.1f} per image)")
        return differ

    image = keras.Input(x.shape[1:], name="input")
    feature_in = keras.Input(features.shape[1:], name="features")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        deployed = _int8(keras, image, code_layer(chain(encoder, head(image))), calib, folder, "device")(x)
        head_int8 = _int8(keras, image, head(image), calib, folder, "head")(x)
        encoder_int8 = _int8(keras, feature_in, code_layer(chain(encoder, feature_in)), run(head)(calib), folder,
                             "encoder")(features)
    differ = row("int8 head + int8 encoder (deployed)", deployed)
    latent_head_int8 = run(lambda f: chain(encoder, f))(head_int8)
    row("int8 head, float encoder", run(code_layer)(latent_head_int8))
    row("float head, int8 encoder", encoder_int8)
    rng = np.random.default_rng(0)
    flips = max(1, int(round(differ.reshape(len(x), -1).sum(1).mean())))
    noisy = code.reshape(len(x), -1).copy()
    for sample in noisy:
        sample[rng.choice(sample.size, flips, replace=False)] += rng.choice([-1.0, 1.0], flips)
    row(f"float code, {flips} random ±1 symbol changes per image", noisy.reshape(code.shape))
    distance = 0.5 - np.abs(latent - np.round(latent))  # of the float latent from the nearest rounding boundary
    print(f"  float latents' distance from a rounding boundary: median {np.median(distance):.3f}; of the symbols "
          f"that differ: median {np.median(distance[differ]):.3f}, 90th percentile {np.percentile(distance[differ], 90):.3f}")
    sqnr = 10 * np.log10(np.sum(features ** 2) / np.sum((head_int8 - features) ** 2))
    print(f"  int8 head: feature SQNR {sqnr:.1f} dB, latent error {np.std(latent_head_int8 - latent):.4f} (std); "
          f"the model's tail on them, no code between, agrees {np.mean(run(tail)(head_int8).argmax(1) == run(tail)(features).argmax(1)):.4f}")


def deployed(model_path: Path, bundle: Path) -> None:
    """convert as run.py does, then the bundle's real frames on the benchmark's test subset."""
    from deployed import evaluate_bundle
    from sets import write_sets as benchmark_sets

    from edgekit.converters import convert

    sets = benchmark_sets(Path("build/cifar10/full"), None, test=2000, train=50000)
    report = convert(model=model_path, split="code", calib=sets["calib"], eval=sets["test"],
                     targets=["rpi", "ethos-u55-128"], runtime="tflite", output=bundle, force=True, latency_runs=0,
                     codec="ans", min_agreement=0.0).report
    with np.load(sets["test"]) as test:
        measured, images = evaluate_bundle(bundle, test["x"], test["y"]), len(test["y"])
    print(f"  convert: int8 agreement {report['worst_agreement']:.4f} and float top-1 "
          f"{report['eval']['accuracy_float']:.4f} on {report['eval']['samples']} test images; deployed: "
          f"{measured['mean_bytes']:.1f} B per frame ({measured['mean_payload_bytes']:.1f} B payload), top-1 "
          f"{measured['top1']:.4f} on {images} test images")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="'sets' to write the sets, or a re-encoded .keras model to diagnose")
    parser.add_argument("--out", type=Path, default=Path("build/cifar10/qat"))
    parser.add_argument("--convert", type=Path, metavar="BUNDLE", help="also convert MODEL to BUNDLE and measure it")
    args = parser.parse_args()
    if args.model == "sets":
        write_sets(args.out)
    else:
        diagnose(Path(args.model), args.out)
        if args.convert:
            deployed(Path(args.model), args.convert)
    return 0


if __name__ == "__main__":
    sys.exit(main())
