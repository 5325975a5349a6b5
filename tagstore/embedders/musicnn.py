"""musicnn (Pons & Serra 2019, ISC licence) in PyTorch, loading the original trained weights.

The network is the ``musicnn`` architecture of the ``musicnn==0.1.0`` package (MSD_musicnn and
MTT_musicnn, 50 tags each): a musically motivated front end (timbral 7x38 and 7x67 convolutions, temporal
128/64/32 convolutions, each max-pooled over frequency), three dense-connected 1-D convolutions, global
max and mean pooling over time and a dense back end. Its input is the original's log-mel patch: 16 kHz,
512-point periodic-Hann STFT with hop 256 (centred, zero-padded as librosa >= 0.9 does), power, the
librosa Slaney mel filterbank (96 bands, 0-8 kHz, ``htk=False``, ``norm="slaney"``), ``log10(10000 x + 1)``,
187 frames per patch. The original frames the whole track (centred frames, zero padding at the ends)
and cuts non-overlapping 187-frame patches: patch k is centred on samples [47872 k, 47872 (k + 1)) and
reads [47872 k - 256, 47872 (k + 1)), so a window here is 48128 samples (3.008 s) every 47872 (2.992 s),
after ``lead_in_samples`` = 256 zeros the host puts before the track. (Framing each 47872-sample window on
its own instead zero-pads its first frame: a fake onset that changes max_pool by ~10% from the second
patch on.) The original rounds the mel power and ``log10(10000 x + 1)`` to float16; that rounding is kept
(without it outputs move by ~5e-4 relative), its float16 overflow on loud input is not: the arithmetic is
float32.

torch is imported when an embedder is built, not when this module is imported. Weights come from the
cache (``tagstore models fetch musicnn``): the TF checkpoints of the wheel converted to safetensors, with
their TF variable names and layouts (:func:`convert_wheel`).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tagstore.embedders import _torch
from tagstore.embedders.base import POOLS, Embedder, parse_pool, pool_windows
from tagstore.errors import EmbedderError, MissingDependencyError

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
N_FRAMES = 187
"""Frames per patch: ``librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1``."""
PATCH_SAMPLES = N_FRAMES * HOP
"""47872 samples = 2.992 s: the hop between patches, the audio their frames are centred on."""
WINDOW_SAMPLES = PATCH_SAMPLES + N_FFT - HOP
"""48128 samples = 3.008 s: the audio a patch's 187 frames read (half an FFT beyond each end centre)."""
BN_EPS = 1e-3
"""``tf.compat.v1.layers.batch_normalization`` default epsilon."""
MODELS = ("MSD", "MTT")
LAYERS = {"max_pool": 753, "mean_pool": 753, "penultimate": 200, "taggram": 50}
"""Layers an embedding can come from and their sizes: the front and mid end max- or mean-pooled over a
patch's 187 frames, the 200-unit dense layer, and the 50 tag probabilities (the "taggram")."""
OUTPUTS = {"max_pool": 753, "mean_pool": 753, "penultimate": 200, "tags": 50}
"""What one forward pass returns (:meth:`MusicnnEmbedder.outputs`); ``taggram`` is ``tags``."""

MTT_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
    "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
    "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
    "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)
MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul",
    "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies",
    "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s",
    "party", "country", "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal",
    "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)


def _param_shapes() -> dict[str, tuple[int, ...]]:
    """The inference variables of a musicnn checkpoint (TF names and shapes, creation order)."""
    shapes: dict[str, tuple[int, ...]] = {}
    convs = [(7, 38, 1, 204), (7, 67, 1, 204), (128, 1, 1, 51), (64, 1, 1, 51), (32, 1, 1, 51),
             (7, 561, 1, 64), (7, 64, 1, 64), (7, 64, 1, 64)]
    for i, shape in enumerate(convs):
        shapes[f"conv2d{'_' + str(i) if i else ''}/kernel"] = shape
        shapes[f"conv2d{'_' + str(i) if i else ''}/bias"] = (shape[-1],)
    for i, n in enumerate([1, 204, 204, 51, 51, 51, 64, 64, 64, 1506, 200]):
        for v in ("gamma", "beta", "moving_mean", "moving_variance"):
            shapes[f"batch_normalization{'_' + str(i) if i else ''}/{v}"] = (n,)
    shapes.update({"dense/kernel": (1506, 200), "dense/bias": (200,), "dense_1/kernel": (200, 50), "dense_1/bias": (50,)})
    return shapes


PARAM_SHAPES = _param_shapes()


# --- weights: the wheel's TF checkpoints -> safetensors ----------------------------------------------


def convert_wheel(wheel: Path, out_dir: Path) -> None:
    """Convert the checkpoints of a ``musicnn==0.1.0`` wheel into ``{MSD,MTT}_musicnn.safetensors`` in ``out_dir``.

    Keeps the inference variables (:data:`PARAM_SHAPES`, TF names and layouts, float32), drops optimiser
    slots; no TensorFlow needed. Raises EmbedderError if the file is not such a wheel.
    """
    from safetensors.numpy import save_file

    from tagstore.embedders._tfcheckpoint import CheckpointError, read_tensors

    try:
        with zipfile.ZipFile(wheel) as zf:
            for model in MODELS:
                prefix = f"musicnn/{model}_musicnn/"
                index, data = zf.read(prefix + ".index"), zf.read(prefix + ".data-00000-of-00001")
                tensors = read_tensors(index, lambda _shard, data=data: data, names=PARAM_SHAPES)
                for name, shape in PARAM_SHAPES.items():
                    if tensors[name].shape != shape or tensors[name].dtype != np.float32:
                        raise CheckpointError(f"{name} is {tensors[name].dtype}{tensors[name].shape}, expected float32{shape}")
                # One metadata key: safetensors writes metadata from a hash map whose order changes from
                # process to process, and the file's digest is the embedder's version, so it must be stable.
                meta = {"source": f"musicnn==0.1.0 {prefix} (tf-names/1)"}
                save_file(tensors, str(Path(out_dir) / f"{model}_musicnn.safetensors"), metadata=meta)
    except (zipfile.BadZipFile, KeyError, CheckpointError) as exc:
        raise EmbedderError(f"{wheel} is not a usable musicnn 0.1.0 wheel ({exc})") from exc


# --- input: log-mel patches ----------------------------------------------------------------------


def mel_filterbank() -> np.ndarray:
    """librosa's ``filters.mel(sr=16000, n_fft=512, n_mels=96)`` (Slaney scale and norm): ``(96, 257)`` float32."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        mels = f / f_sp
        log = f >= min_log_hz
        mels[log] = min_log_hz / f_sp + np.log(f[log] / min_log_hz) / (np.log(6.4) / 27.0)
        return mels

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        freqs = f_sp * m
        log = m >= min_log_hz / f_sp
        freqs[log] = min_log_hz * np.exp(np.log(6.4) / 27.0 * (m[log] - min_log_hz / f_sp))
        return freqs

    fftfreqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    lo, hi = hz_to_mel(np.array([0.0, SAMPLE_RATE / 2.0]))
    mel_f = mel_to_hz(np.linspace(lo, hi, N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((N_MELS, N_FFT // 2 + 1), dtype=np.float32)
    for i in range(N_MELS):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2:] - mel_f[:N_MELS]))[:, None]  # float32 in place, as librosa does
    return weights


# --- the network ---------------------------------------------------------------------------------


def _dft_matrix() -> np.ndarray:
    """``(96, 98)``: a row of 96 bands times it gives its 49 rfft bins as (re, im) pairs."""
    ang = 2 * np.pi * np.outer(np.arange(N_MELS), np.arange(49)) / N_MELS
    return np.stack([np.cos(ang), -np.sin(ang)], 2).reshape(N_MELS, 98)


def _dft_factors(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Factors of a timbral convolution ``(7, F, 204)`` (time, frequency, filter) in the DFT domain.

    Returns per-bin tap matrices ``(49, 408, 14)`` (rows (re/im, filter), columns (re/im, tap)) mapping the
    bins of 7 consecutive frames to the bins of the correlation, and ``(97 - F, 98)`` evaluating the inverse
    real DFT at the 97 - F valid frequencies.
    """
    n_valid = N_MELS - w.shape[1] + 1
    wf = np.conj(np.fft.rfft(w.astype(np.float64), n=N_MELS, axis=1)).transpose(1, 2, 0)  # (49, 204, 7)
    g = np.zeros((49, 2, 204, 2, 7))
    g[:, 0, :, 0], g[:, 0, :, 1], g[:, 1, :, 0], g[:, 1, :, 1] = wf.real, -wf.imag, wf.imag, wf.real
    scale = np.full(49, 2.0 / N_MELS)
    scale[[0, 48]] = 1.0 / N_MELS
    ang = 2 * np.pi * np.outer(np.arange(49), np.arange(n_valid)) / N_MELS
    inv = np.stack([scale[:, None] * np.cos(ang), -scale[:, None] * np.sin(ang)], 1).reshape(98, n_valid).T
    return g.reshape(49, 408, 14), inv


class _Net:
    """musicnn inference with prepared torch tensors: ``(B, 187, 96)`` log-mel -> max_pool, mean_pool, penultimate, probs."""

    def __init__(self, torch: Any, params: dict[str, np.ndarray], device: Any) -> None:
        self.torch, self.device = torch, device
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)  # noqa: E731

        def bn(i: int) -> tuple[np.ndarray, np.ndarray]:
            p = f"batch_normalization{'_' + str(i) if i else ''}/"
            g = params[p + "gamma"].astype(np.float64) / np.sqrt(params[p + "moving_variance"].astype(np.float64) + BN_EPS)
            return g, params[p + "beta"] - params[p + "moving_mean"] * g

        def conv(i: int) -> tuple[np.ndarray, np.ndarray]:
            p = f"conv2d{'_' + str(i) if i else ''}/"
            return params[p + "kernel"], params[p + "bias"]

        g0, h0 = bn(0)
        self.in_affine = (float(g0[0]), float(h0[0]))
        # Front end: conv -> relu -> BN -> max over frequency. Flipping a filter's sign where its BN scale
        # is negative turns that channel's min over frequency into a max, so one amax serves all channels.
        self.front = []
        self.dft: list[tuple[Any, Any]] = []
        self.dft_in = t(_dft_matrix())
        self.use_dft = device.type == "cpu"
        for i, k in enumerate([None, None, 128, 64, 32]):
            w, b = conv(i)
            g, h = bn(i + 1)
            s = np.where(g < 0, -1.0, 1.0)
            if k is None:  # timbral (7, F, 1, 204) -> (204, 1, 7, F), and its DFT factors
                wk = t((w[:, :, 0, :] * s).transpose(2, 0, 1)[:, None])
                self.dft.append(tuple(t(a) for a in _dft_factors(w[:, :, 0, :] * s)))
            else:  # temporal (k, 1, 1, 51) -> block-Toeplitz GEMM matrix, see _temporal
                wk = self._toeplitz(w[:, 0, 0, :] * s, k)
            self.front.append((k, wk, t(s), t(b), t(g), t(h)))
        self.mid = []
        for i in range(5, 8):
            w, b = conv(i)
            g, h = bn(i + 1)
            self.mid.append((t(w[:, :, 0, :].transpose(2, 1, 0)), t(b), t(g[:, None]), t(h[:, None])))
        g9, h9 = bn(9)
        k1 = params["dense/kernel"].astype(np.float64)
        # BN before the first dense layer folds into it exactly (affine then linear).
        self.dense = (t((k1 * g9[:, None]).T), t(params["dense/bias"] + h9 @ k1))
        self.bn10 = (t(bn(10)[0]), t(bn(10)[1]))
        self.out = (t(params["dense_1/kernel"].T), t(params["dense_1/bias"]))

    TB = 16  # output frames per row of the temporal block-Toeplitz GEMM

    def _toeplitz(self, w: np.ndarray, k: int) -> Any:
        """``(k, 51)`` temporal filters -> ``(TB + k - 1, TB * 51)``: row block j gives frames j*TB..j*TB+TB-1."""
        m = np.zeros((self.TB + k - 1, self.TB, w.shape[1]), dtype=np.float32)
        for tb in range(self.TB):
            m[tb : tb + k, tb] = w
        return self.torch.as_tensor(m.reshape(self.TB + k - 1, -1), device=self.device)

    def _timbral_direct(self, x: Any) -> list[Any]:
        F = self.torch.nn.functional
        xp = F.pad(x, (0, 0, 3, 3)).unsqueeze(1)
        return [F.conv2d(xp, self.front[i][1]).amax(3) for i in range(2)]  # 2 x (B, 204, 187)

    CHUNK = 2  # patches per pass of the DFT path (its intermediate is ~30 MB per patch and convolution)

    def _timbral_dft(self, x: Any) -> list[Any]:
        """The two timbral convolutions (max over frequency) through a 96-point DFT along frequency.

        Per frequency bin the 7 time taps are a small GEMM; the inverse DFT at the valid outputs is one
        GEMM. That is about 2.6x fewer multiply-adds than the direct convolutions (same result to ~1e-6).
        """
        torch, B = self.torch, x.shape[0]
        X = (torch.nn.functional.pad(x, (0, 0, 3, 3)).reshape(-1, N_MELS) @ self.dft_in).view(B, N_FRAMES + 6, 49, 2)
        outs: list[list[Any]] = [[], []]
        for b0 in range(0, B, self.CHUNK):
            xb = X[b0 : b0 + self.CHUNK]
            nb = xb.shape[0]
            s = xb.stride()  # taps[nu] = (re/im, tap) x (patch, frame)
            taps = xb.as_strided((49, 2, 7, nb, N_FRAMES), (s[2], s[3], s[1], s[0], s[1])).reshape(49, 14, nb * N_FRAMES)
            y = torch.empty(49, 408, nb * N_FRAMES, device=x.device)
            for a, (g, inv) in enumerate(self.dft):
                for nu in range(49):
                    torch.mm(g[nu], taps[nu], out=y[nu])
                m = torch.mm(inv, y.view(98, -1)).amax(0)  # (204 * nb * 187,)
                outs[a].append(m.view(204, nb, N_FRAMES))
        return [torch.cat(o, 1).transpose(0, 1) for o in outs]

    def _temporal(self, x: Any, wk: Any, k: int) -> Any:
        # TF 'same' padding: (k-1)//2 frames before, the rest after; frames on the last axis, one row per band.
        F, B, TB = self.torch.nn.functional, x.shape[0], self.TB
        n_blocks = -(-N_FRAMES // TB)
        length = n_blocks * TB + k - 1
        xt = F.pad(x.transpose(1, 2), ((k - 1) // 2, length - N_FRAMES - (k - 1) // 2))  # (B, 96, length)
        s = xt.stride()
        rows = xt.as_strided((B, N_MELS, n_blocks, TB + k - 1), (s[0], s[1], TB, s[2])).reshape(-1, TB + k - 1)
        y = (rows @ wk).view(B, N_MELS, n_blocks * TB * 51).amax(1)
        return y.view(B, n_blocks * TB, 51)[:, :N_FRAMES].transpose(1, 2)  # (B, 51, 187)

    def __call__(self, logmel: Any) -> tuple[Any, Any, Any]:
        torch, F = self.torch, self.torch.nn.functional
        x = logmel * self.in_affine[0] + self.in_affine[1]
        feats = []
        timbral = self._timbral_dft(x) if self.use_dft else self._timbral_direct(x)
        for i, (k, wk, s, b, g, h) in enumerate(self.front):
            m = timbral[i] if k is None else self._temporal(x, wk, k)
            e = torch.relu(m * s[:, None] + b[:, None])
            feats.append(torch.addcmul(h[:, None], e, g[:, None]))
        front = torch.cat(feats, 1)  # (B, 561, 187)
        layers = [front]
        prev = None
        for w, b, g, h in self.mid:
            y = torch.addcmul(h, torch.relu(F.conv1d(layers[-1], w, b, padding=3)), g)
            prev = y if prev is None else y + prev
            layers.append(prev)
        mid = torch.cat(layers, 1)  # (B, 753, 187)
        max_pool, mean_pool = mid.amax(2), mid.mean(2)
        flat = torch.stack([max_pool, mean_pool], 2).flatten(1)  # TF concat on the last axis: interleaved
        pen = torch.relu(F.linear(flat, *self.dense)) * self.bn10[0] + self.bn10[1]
        probs = torch.sigmoid(F.linear(pen, *self.out))
        return max_pool, mean_pool, pen, probs


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable else a.copy()  # torch.from_numpy warns on read-only memory


def _round_half(x: Any) -> Any:
    """Round float32 ``x >= 0`` to the nearest float16 value (ties to even), but with float32's range: no overflow."""
    torch = sys.modules["torch"]
    bits = x.view(torch.int32)
    normal = ((bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF).view(torch.float32)  # keep 10 mantissa bits
    subnormal = torch.round(x * 2.0**24) * 2.0**-24  # below 2**-14 float16 has a fixed step of 2**-24
    return torch.where(x < 2.0**-14, subnormal, normal)


# --- the embedder --------------------------------------------------------------------------------


class MusicnnEmbedder(Embedder):
    """musicnn embeddings and its 50 tags, from the original weights, in PyTorch.

    Options (strings from a spec such as ``musicnn:model=MTT:layer=penultimate``):
    ``model`` ``"MSD"`` (default, Million Song Dataset tags) or ``"MTT"`` (MagnaTagATune);
    ``layer`` ``"max_pool"`` (default, 753-d: the front and mid end max-pooled over a patch's frames),
    ``"mean_pool"`` (753-d: mean-pooled instead), ``"penultimate"`` (200-d dense layer) or ``"taggram"``
    (the 50 tag probabilities); ``pool`` over a track's windows ``"mean"`` (default), ``"mean+max"`` or
    ``"mean+std"`` (twice the layer's size: the mean, then the maximum or standard deviation); ``device`` ``"auto"`` (CUDA when available), ``"cpu"`` or
    ``"cuda"``; ``threads`` (parallel CPU workers, else ``$TAGSTORE_THREADS``, ``$OMP_NUM_THREADS`` or the
    usable CPUs: :func:`tagstore.embedders._torch.resolve_threads`; each runs torch single-threaded, so building one sets ``torch.set_num_threads(1)``);
    ``weights_dir`` (else the cache).

    A window is the audio of one original patch: 48128 samples (3.008 s) at 16 kHz every 47872 (2.992 s),
    after 256 zeros of lead-in (the original's centred first frame); the track vector pools the windows
    (``pool``; the mean by default, the original's patches do not overlap).
    """

    name = "musicnn"
    licence = "ISC"
    sample_rate = SAMPLE_RATE
    window_s = WINDOW_SAMPLES / SAMPLE_RATE
    hop_s = PATCH_SAMPLES / SAMPLE_RATE
    lead_in_samples = N_FFT // 2
    """Zeros the host should put before a track so that windows line up with the original's patches."""
    batch_size = 32
    CUDA_WINDOW_BYTES = 48 << 20
    """Working memory of one window in a CUDA forward pass (an estimate: the timbral convolutions' outputs dominate)."""

    def __init__(
        self,
        model: str = "MSD",
        layer: str = "max_pool",
        pool: str = "mean",
        device: str = "auto",
        threads: int | str | None = None,
        weights_dir: str | Path | None = None,
        batch_size: int | str | None = None,
    ) -> None:
        from tagstore.embedders import weights

        self.model = str(model).upper().removesuffix("_MUSICNN")
        if self.model not in MODELS:
            raise EmbedderError(f"musicnn: unknown model {model!r}; choose MSD or MTT")
        if layer not in LAYERS:
            raise EmbedderError(f"musicnn: unknown layer {layer!r}; choose {', '.join(LAYERS)}")
        if device not in ("auto", "cpu", "cuda"):
            raise EmbedderError(f"musicnn: unknown device {device!r}; choose auto, cpu or cuda")
        self.pool_how = parse_pool(self.name, pool)
        self.layer, self.dim = layer, LAYERS[layer] * POOLS[self.pool_how]
        self.tag_names = MSD_TAGS if self.model == "MSD" else MTT_TAGS
        if batch_size not in (None, ""):
            if not str(batch_size).isdigit() or int(batch_size) < 1:  # type: ignore[arg-type]
                raise EmbedderError(f"musicnn: batch_size must be a positive whole number, got {batch_size!r}")
            self.batch_size = int(batch_size)  # type: ignore[arg-type]
        path, self.weights_digest = weights.weights_file(
            weights.BUNDLES["musicnn"], f"{self.model}_musicnn.safetensors",
            Path(weights_dir) if weights_dir not in (None, "") else None,
        )
        try:
            import torch
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(
                "embedder 'musicnn' needs the package 'torch', which is not installed; run: pip install 'tagstore[torch]'"
            ) from exc
        from safetensors.numpy import load_file

        self._torch = torch
        self.threads = _torch.resolve_threads(self.name, threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise EmbedderError("musicnn: device 'cuda' asked for but torch sees no CUDA device; use device=cpu")
        self.device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
        params = load_file(str(path))
        missing = [k for k, shape in PARAM_SHAPES.items() if k not in params or params[k].shape != shape]
        if missing:
            raise EmbedderError(f"musicnn: {path} lacks or misshapes {missing[:3]}; run `tagstore models fetch musicnn`")
        if self.device.type == "cpu" and torch.get_num_threads() != 1:
            # Parallel work is split across patches in our own threads; torch's intra-op threads would
            # add a barrier to each of the many small products, which stalls on a busy machine.
            torch.set_num_threads(1)
        self._pool: Any = None
        self.batch_size = _torch.batch_size_for(torch, self.device, self.CUDA_WINDOW_BYTES, self.batch_size,
                                                given=batch_size not in (None, ""))  # fmt: skip
        self._to_device = _torch.HostToDevice(torch, self.device)
        self._net = _Net(torch, params, self.device)
        self._mel = torch.as_tensor(mel_filterbank().T.copy(), device=self.device)  # (257, 96)
        self._window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64, device=self.device)

    @property
    def version(self) -> str:
        return f"1:{self.weights_digest[:23]}"

    @property
    def options(self) -> dict[str, Any]:
        # ``pool`` only when it is not the mean, so layouts recorded before it existed still match.
        extra = {"pool": self.pool_how} if self.pool_how != "mean" else {}
        return {"model": self.model, "layer": self.layer, **extra}

    def pool(self, window_embeddings: np.ndarray) -> np.ndarray:
        """``(m, layer size)`` window embeddings -> ``(dim,)`` float32 by the ``pool`` option."""
        return pool_windows(window_embeddings, self.pool_how)

    @property
    def window_dim(self) -> int:
        return LAYERS[self.layer]

    def _logmel(self, windows: Any, original_rounding: bool = True) -> Any:
        torch = self._torch
        frames = windows.unfold(1, N_FFT, HOP)  # (n, 187, 512): frame i centred on window sample 256 (i + 1)
        # Like librosa: window and FFT in float64, the spectrum rounded to complex64, the rest float32.
        spec = torch.fft.rfft(frames.double() * self._window, dim=-1).to(torch.complex64)
        mel = spec.abs().square() @ self._mel  # (n, 187, 96) power; |X| then squared, as librosa does
        if not original_rounding:
            return torch.log10(mel * 10000.0 + 1.0)
        # The original casts the mel power to float16 and takes log10(10000 x + 1) in float16: each step is
        # rounded to float16 precision here too, but in float32 arithmetic, so loud input cannot overflow.
        r = _round_half
        return r(torch.log10(r(r(r(mel) * 10000.0) + 1.0)))

    def logmel(self, windows: np.ndarray, original_rounding: bool = True) -> np.ndarray:
        """The network input of ``(n, 48128)`` float32 16 kHz windows: ``(n, 187, 96)`` float32 log-mel.

        ``original_rounding`` rounds each step of ``log10(10000 x + 1)`` to float16 precision as the original
        does (without its overflow); off, the steps are plain float32 (about 1e-3 relative change in outputs).
        """
        windows = _writable(self.check_windows(windows))
        with self._torch.inference_mode():
            x = self._torch.from_numpy(windows).to(self.device)
            return self._logmel(x, original_rounding).cpu().numpy()

    def outputs(self, windows: np.ndarray | None = None, *, logmel: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """All outputs of one forward pass over windows (or ready log-mel patches ``(n, 187, 96)``).

        Returns float32 ``{"max_pool": (n, 753), "mean_pool": (n, 753), "penultimate": (n, 200), "tags": (n, 50)}``
        (tags: probabilities).
        """
        if logmel is None:
            src = self.check_windows(windows)
        else:
            src = np.ascontiguousarray(logmel, dtype=np.float32)
            if src.ndim != 3 or src.shape[1:] != (N_FRAMES, N_MELS):
                raise ValueError(f"musicnn: expected log-mel of shape (n, {N_FRAMES}, {N_MELS}), got {src.shape}")
        src = _writable(src)
        if src.shape[0] == 0:
            return {k: np.zeros((0, d), np.float32) for k, d in OUTPUTS.items()}
        n = src.shape[0]
        workers = min(self.threads, -(-n // _Net.CHUNK)) if self.device.type == "cpu" else 1
        if workers <= 1:
            parts = [self._run(src, logmel is None)]
        else:  # patches are independent: split them across our workers
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="musicnn")
            step = -(-n // workers)
            parts = list(self._pool.map(self._run, [src[i : i + step] for i in range(0, n, step)], [logmel is None] * workers))
        return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(OUTPUTS)}

    def _run(self, src: np.ndarray, from_audio: bool) -> tuple[np.ndarray, ...]:
        torch = self._torch
        with torch.inference_mode():
            x = self._to_device(src)
            return tuple(y.cpu().numpy() for y in self._net(self._logmel(x) if from_audio else x))

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 48128)`` float32 windows at 16 kHz -> ``(n, layer size)`` float32 (753, 753, 200 or 50)."""
        return self.embed_tags(windows)[0]

    def embed_tags(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 48128)`` windows -> ``(n, layer size)`` embeddings and ``(n, 50)`` tag probabilities from one pass."""
        out = self.outputs(windows)
        return out["tags" if self.layer == "taggram" else self.layer], out["tags"]
