"""Make the Chainer fixtures of tests/unit/model/test_chainer_import.py (run it with Chainer, not stemforge).

It builds the seed article's U-Net as a Chainer chain (same link names, same forward), gives it
random weights and random BatchNorm statistics (so that eps and the running statistics matter),
runs it in test mode on a random magnitude-like input, and writes, per fixture::

    tests/data/chainer/<name>.model     the weights, chainer.serializers.save_npz
    tests/data/chainer/<name>.io.npz    x [batch, 1, 512, n_frames] (input), y (Chainer's output),
                                        kernel_size, width

Chainer is not a stemforge dependency; use a separate environment::

    python3 -m venv /tmp/chainer-venv
    /tmp/chainer-venv/bin/pip install "numpy<2" "setuptools<70" wheel
    /tmp/chainer-venv/bin/pip install --no-build-isolation chainer==7.8.1
    /tmp/chainer-venv/bin/python tools/make_chainer_fixture.py            # the committed fixtures
    /tmp/chainer-venv/bin/python tools/make_chainer_fixture.py --full DIR # full-size (~25 MB), not committed

The committed fixtures are width-reduced (full-size weights are too big to commit); the
converter reads channel counts from the weight shapes, so they go through the same code as the
seed's full-size ``unet.model``. ``--full DIR`` writes the full-size network (kernel 4, width 1)
to DIR; point STEMFORGE_CHAINER_FULL=DIR at it to run the full-size test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

try:
    import chainer
    import chainer.functions as F
    import chainer.links as L
except ImportError:  # pragma: no cover - only importable where chainer is installed
    chainer = None

ENCODER = (16, 32, 64, 128, 256, 512)
DECODER = (256, 128, 64, 32, 16, 1)

#: name -> (kernel_size, width, batch, n_frames, prefix, seed)
FIXTURES = {
    "unet_k4_w0125": (4, 0.125, 1, 64, "unet", 20240601),
    "unet_k5_w00625": (5, 0.0625, 2, 64, "", 20240602),
}


def _scale(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def build_chain(kernel_size: int, width: float, n_bins: int, n_frames: int):
    """The seed's U-Net chain, with the channel counts scaled by ``width``.

    For odd kernels the deconvolutions get padding (k-1)/2 and an explicit ``outsize`` (twice
    their input), which the input size fixes; even kernels use padding (k-2)/2 as the seed.
    """
    k = kernel_size
    pad = (k - 1) // 2 if k % 2 else (k - 2) // 2
    enc = [_scale(c, width) for c in ENCODER]
    dec = [_scale(c, width) for c in DECODER[:-1]] + [1]
    dec_in = [enc[5]] + [dec[i - 1] + enc[5 - i] for i in range(1, 6)]

    class SeedUNet(chainer.Chain):
        def __init__(self):
            super().__init__()
            with self.init_scope():
                cin = 1
                for i, c in enumerate(enc, start=1):
                    setattr(self, f"conv{i}", L.Convolution2D(cin, c, k, 2, pad))
                    setattr(self, f"norm{i}", L.BatchNormalization(c))
                    cin = c
                for i, (ci, co) in enumerate(zip(dec_in, dec), start=1):
                    level = 6 - i  # output is 2**level times smaller than the input
                    outsize = (n_bins >> level, n_frames >> level) if k % 2 else None
                    setattr(self, f"deconv{i}", L.Deconvolution2D(ci, co, k, 2, pad, outsize=outsize))
                    if i < 6:
                        setattr(self, f"denorm{i}", L.BatchNormalization(co))

        def __call__(self, x, calibrate=None):
            hs = []
            h = x
            for i in range(1, 7):
                a = getattr(self, f"conv{i}")(h)
                if calibrate:
                    calibrate(getattr(self, f"norm{i}"), a.array)
                h = F.leaky_relu(getattr(self, f"norm{i}")(a))
                hs.append(h)
            h = hs.pop()
            for i in range(1, 6):
                if i > 1:
                    h = F.concat((h, hs.pop()))
                a = getattr(self, f"deconv{i}")(h)
                if calibrate:
                    calibrate(getattr(self, f"denorm{i}"), a.array)
                h = getattr(self, f"denorm{i}")(a)
                if i <= 3:
                    h = F.dropout(h)
                h = F.relu(h)
            return F.sigmoid(self.deconv6(F.concat((h, hs.pop()))))

    class Wrapper(chainer.Chain):
        """Like the seed's training wrapper: saving it prefixes every key with ``unet/``."""

        def __init__(self, unet):
            super().__init__()
            with self.init_scope():
                self.unet = unet

    return SeedUNet(), Wrapper


def randomize(net, x: np.ndarray, rng: np.random.Generator) -> None:
    """Random weights (from ``rng``) and BatchNorm statistics near the real ones on ``x``.

    A quarter of each layer's channels get weights 100-1000 times smaller, so that their
    variance is of the order of BatchNorm's eps (2e-5) and a wrong eps shows in the output.
    """
    for link in net.links(skipself=True):
        if isinstance(link, (L.Convolution2D, L.Deconvolution2D)):
            W = link.W.array
            out_axis = 0 if isinstance(link, L.Convolution2D) else 1
            fan_in = W.shape[1] * W.shape[2] * W.shape[3]
            W[...] = rng.standard_normal(W.shape) / np.sqrt(fan_in)
            n_out = W.shape[out_axis]
            small = rng.random(n_out) < 0.25
            factor = np.where(small, 10.0 ** rng.uniform(-3, -2, n_out), 1.0).astype(np.float32)
            shape = [1, 1, 1, 1]
            shape[out_axis] = n_out
            W *= factor.reshape(shape)
            link.b.array[...] = rng.normal(0, 0.05, link.b.shape) * factor

    def calibrate(bn, a: np.ndarray) -> None:
        c = a.shape[1]
        mean = a.mean(axis=(0, 2, 3))
        var = a.var(axis=(0, 2, 3))
        bn.avg_mean[...] = mean + rng.normal(0, 0.1, c) * np.sqrt(var)
        bn.avg_var[...] = var * rng.uniform(0.7, 1.4, c)
        bn.gamma.array[...] = rng.uniform(0.6, 1.4, c)
        bn.beta.array[...] = rng.normal(0, 0.2, c)
        bn.N = int(rng.integers(50, 5000))

    with chainer.using_config("train", False), chainer.using_config("enable_backprop", False):
        net(x, calibrate=calibrate)


def make(out_dir: Path, name: str, kernel_size: int, width: float, batch: int, n_frames: int, prefix: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, 1, 512, n_frames)) ** 3).astype(np.float32)
    net, wrapper_cls = build_chain(kernel_size, width, 512, n_frames)
    randomize(net, x, rng)
    with chainer.using_config("train", False), chainer.using_config("enable_backprop", False):
        y = net(x).array
    out_dir.mkdir(parents=True, exist_ok=True)
    to_save = wrapper_cls(net) if prefix == "unet" else net
    chainer.serializers.save_npz(str(out_dir / f"{name}.model"), to_save)
    np.savez_compressed(out_dir / f"{name}.io.npz", x=x, y=y, kernel_size=kernel_size, width=width)
    size = (out_dir / f"{name}.model").stat().st_size
    print(f"{name}: k={kernel_size} width={width} y in [{y.min():.3f}, {y.max():.3f}] mean {y.mean():.3f}; {size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/data/chainer")
    parser.add_argument("--full", type=Path, default=None, help="write the full-size network (k=4, width 1) here instead")
    args = parser.parse_args()
    if chainer is None:
        raise SystemExit("chainer is not installed in this environment (see the docstring)")
    if args.full is not None:
        make(args.full, "unet_full", 4, 1.0, 1, 128, "", 20240603)
        return
    for name, spec in FIXTURES.items():
        make(args.out, name, *spec)


if __name__ == "__main__":
    main()
