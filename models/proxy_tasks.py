"""Per-family proxy tasks on real bundled data: train / calibration / eval splits and task metrics.

Each zoo variant gets a :class:`ProxyTask` mapped onto its exact input contract (see the README, "Accuracy gates"):

| family | data (ships in a wheel) | task | metric | chance |
| --- | --- | --- | --- | --- |
| BST (5) | JapaneseVowels (sktime), padded to 100 frames with the true ``video_len`` | speaker, 9-way | top-1 | 1/9 |
| sign (2) | JapaneseVowels resampled to 300 steps, 12 -> 178 channels | speaker as gloss | top-1 | 1/9 |
| TinyLaDeDa (2) | 15 bundled photos (skimage, sklearn) vs x2 down/up-sampled "fakes" | real/fake | AUC | 0.5 |
| chess | chess sdist: polyglot book positions; syzygy endgames | book move; WDL | top-1 legal; sign acc | ~1/30; 0.5 |
| G-code (2) | JapaneseVowels at 64 steps, 12 -> 135 + 4 categorical channels | speaker | 5-NN; token acc | 1/9 |

The calibration split is always drawn from the training split, so it is disjoint from the eval split.
A model declares its task on its spec, ``ModelSpec(task=make_task)`` (a zero-argument callable returning a
``ProxyTask``), the bundled zoo as any user model: each family module declares one of the builders below (which
take whatever family-specific piece they need as arguments: this module imports no model family);
``export_harness.models.training.task_for(spec)`` builds it once per process.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export_harness.models import datasets

Arrays = dict[str, np.ndarray]
CALIBRATION_SIZE = 64
"""Calibration samples given to static quantizers (ORT: MinMax / Entropy / Percentile)."""


@dataclass(frozen=True)
class Metric:
    """A task metric over resamplable units: ``fn(outputs, idx)`` scores the units ``idx`` (values in [0, 1])."""

    name: str
    fn: Callable[[Arrays, np.ndarray], float] | None
    n_units: int
    chance: float
    higher_is_better: bool = True
    description: str = ""
    unit_scores: Callable[[Arrays], np.ndarray] | None = None
    """For decomposable metrics (accuracies): per-unit scores whose mean is the metric (fast bootstrap)."""

    def __call__(self, outputs: Arrays, idx: np.ndarray | None = None) -> float:
        idx = np.arange(self.n_units) if idx is None else idx
        if self.unit_scores is not None:
            return float(np.mean(self.unit_scores(outputs)[idx]))
        assert self.fn is not None
        return float(self.fn(outputs, idx))


@dataclass
class ProxyTask:
    """Labelled train split (for the reference weights), calibration inputs, eval inputs and metrics."""

    name: str
    description: str
    train_inputs: Arrays
    train_labels: np.ndarray
    calibration: Arrays
    eval_inputs: Arrays
    metrics: tuple[Metric, ...]
    data_hash: str
    extra: dict = field(default_factory=dict)

    @property
    def n_eval(self) -> int:
        return len(next(iter(self.eval_inputs.values())))


def _hash(*parts: object) -> str:
    """Identity of a task's data: the bundled files' hash, the mapping code and its parameters."""
    funcs = (_resampled, _projection, _calibration, fake_of, _ladeda_split, _subset)
    code = "".join(inspect.getsource(f) for f in funcs)
    return hashlib.sha256((repr(parts) + code).encode()).hexdigest()


def _take(arrays: Arrays, idx: np.ndarray) -> Arrays:
    return {k: v[idx] for k, v in arrays.items()}


def _calibration(train: Arrays, n: int = CALIBRATION_SIZE, seed: int = 7) -> Arrays:
    size = len(next(iter(train.values())))
    idx = np.sort(np.random.default_rng(seed).choice(size, size=min(n, size), replace=False))
    return _take(train, idx)


def top1_metric(output: str, labels: np.ndarray, name: str = "top1", chance: float = 0.0,
                offset: int = 0) -> Metric:
    """Top-1 accuracy of ``argmax(outputs[output]) == labels + offset``."""

    def scores(outs: Arrays) -> np.ndarray:
        return (np.argmax(outs[output], axis=-1) == labels + offset).astype(np.float64)

    return Metric(name, None, len(labels), chance, description=f"top-1 accuracy of {output}", unit_scores=scores)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_of = np.empty(len(allv))
    rank_of[order] = ranks
    return float((rank_of[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


# -------------------------------------------------------------------------------------- JapaneseVowels base


@functools.lru_cache(maxsize=1)
def _vowels() -> tuple[datasets.SeriesSplit, datasets.SeriesSplit, np.ndarray, np.ndarray, str]:
    train, test, digest = datasets.japanese_vowels()
    cat = np.concatenate([s for s in train.series], axis=1)
    return train, test, cat.mean(axis=1, keepdims=True), cat.std(axis=1, keepdims=True) + 1e-6, digest


def _resampled(split: datasets.SeriesSplit, mean: np.ndarray, std: np.ndarray, steps: int) -> np.ndarray:
    """[N, steps, 12] z-scored series linearly resampled to ``steps``."""
    out = np.empty((len(split.series), steps, mean.shape[0]), dtype=np.float32)
    for i, s in enumerate(split.series):
        z = (s - mean) / std
        src = np.linspace(0.0, 1.0, z.shape[1])
        dst = np.linspace(0.0, 1.0, steps)
        out[i] = np.stack([np.interp(dst, src, ch) for ch in z], axis=1)
    return out


def _projection(seed: int, n_in: int, n_out: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _subset(split: datasets.SeriesSplit, limit: int | None, seed: int) -> datasets.SeriesSplit:
    """A seeded subset of ``limit`` series (all of them when ``limit`` is None): heavy models evaluate fewer."""
    if limit is None or limit >= len(split.series):
        return split
    idx = np.sort(np.random.default_rng(seed).choice(len(split.series), size=limit, replace=False))
    return datasets.SeriesSplit(tuple(split.series[i] for i in idx), split.labels[idx], split.class_names)


def _vowel_splits(to_inputs: Callable[[datasets.SeriesSplit], Arrays], max_train: int | None = None,
                  max_eval: int | None = None) -> tuple[Arrays, np.ndarray, Arrays, np.ndarray, str]:
    train, test, _, _, digest = _vowels()
    train, test = _subset(train, max_train, 21), _subset(test, max_eval, 22)
    return to_inputs(train), train.labels, to_inputs(test), test.labels, digest


def sign_task(max_eval: int | None = None) -> ProxyTask:
    """JapaneseVowels resampled to 300 steps, 12 channels -> 178 keypoint slots (fixed projection, sigmoid)."""
    _, _, mean, std, _ = _vowels()
    proj = _projection(178, 12, 178) * 2.0

    def to_inputs(split: datasets.SeriesSplit) -> Arrays:
        return {"input": _sigmoid(_resampled(split, mean, std, 300) @ proj)}

    tr, ytr, ev, yev, digest = _vowel_splits(to_inputs, max_eval=max_eval)
    metrics = (top1_metric("gloss_logits", yev, "gloss_top1", chance=1 / 9),)
    return ProxyTask("japanese_vowels->sign", "speaker (9) of JapaneseVowels as gloss 0..8, category 0..8; "
                     "series resampled to 300 steps, 12 channels projected to 178 and squashed to [0, 1]",
                     tr, ytr, _calibration(tr), ev, metrics,
                     _hash("sign", digest, max_eval, inspect.getsource(sign_task)))


BST_TRAIN, BST_EVAL = 180, 150
"""BST costs ~0.2 s per clip on 2 cores: it trains and evaluates on seeded subsets."""


def bst_task(with_pos: bool) -> ProxyTask:
    """JapaneseVowels frames (7-29) zero-padded to 100 with the true ``video_len``; classes 1..9 of 25."""
    _, _, mean, std, _ = _vowels()
    proj = [_projection(72 + p, 12, 72) for p in range(2)]

    def to_inputs(split: datasets.SeriesSplit) -> Arrays:
        n = len(split.series)
        jnb = np.zeros((n, 100, 2, 72), np.float32)
        shuttle = np.zeros((n, 100, 2), np.float32)
        pos = np.zeros((n, 100, 2, 2), np.float32)
        lens = np.zeros(n, np.int64)
        for i, s in enumerate(split.series):
            z = ((s - mean) / std).T.astype(np.float32)  # [L, 12]
            length = z.shape[0]
            lens[i] = length
            for p in range(2):
                jnb[i, :length, p] = 0.5 * np.tanh(z @ proj[p])
                pos[i, :length, p] = _sigmoid(z[:, 2 + 2 * p:4 + 2 * p])
            shuttle[i, :length] = _sigmoid(z[:, :2])
        out = {"JnB": jnb, "shuttle": shuttle, "pos": pos, "video_len": lens}
        if not with_pos:
            del out["pos"]
        return out

    tr, ytr, ev, yev, digest = _vowel_splits(to_inputs, BST_TRAIN, BST_EVAL)
    metrics = (top1_metric("shot_predictions", yev, "top1", chance=1 / 9, offset=1),)
    return ProxyTask("japanese_vowels->bst", "speaker (9) of JapaneseVowels as stroke classes 1..9 of 25 (0 = "
                     "unknown); each frame's 12 LPC channels projected to both players' 72 JnB slots, shuttle and "
                     "pos from channel pairs; frames past the true length (7-29) are zero, video_len = length",
                     tr, ytr, _calibration(tr), ev, metrics,
                     _hash("bst", with_pos, digest, BST_TRAIN, BST_EVAL, inspect.getsource(bst_task)))


def gcode_task() -> ProxyTask:
    """JapaneseVowels resampled to 64 steps -> 135 continuous + 4 categorical (5-level) channels; 5-NN accuracy."""
    _, _, mean, std, _ = _vowels()
    proj = _projection(135, 12, 135) * 1.5

    def to_inputs(split: datasets.SeriesSplit) -> Arrays:
        z = _resampled(split, mean, std, 64)
        cat = np.clip(np.floor((np.tanh(z[..., :4]) + 1.0) / 2.0 * 5.0), 0, 4).astype(np.float32)
        return {"continuous": (z @ proj).astype(np.float32), "categorical": cat}

    tr, ytr, ev, yev, digest = _vowel_splits(to_inputs)
    n_query = len(yev)
    # Eval inputs = queries (test split) followed by the gallery (train split); both run through the artifact.
    eval_inputs = {k: np.concatenate([ev[k], tr[k]]) for k in ev}

    def knn(outs: Arrays, k: int = 5) -> np.ndarray:
        fp = outs["fingerprint"].astype(np.float64)
        fp = fp / (np.linalg.norm(fp, axis=1, keepdims=True) + 1e-12)
        query, gallery = fp[:n_query], fp[n_query:]
        nearest = np.argsort(-(query @ gallery.T), axis=1, kind="stable")[:, :k]
        votes = ytr[nearest]
        pred = np.array([np.bincount(v, minlength=9).argmax() for v in votes])
        return (pred == yev).astype(np.float64)

    metric = Metric("knn5", None, n_query, 1 / 9, unit_scores=knn,
                    description="5-NN (cosine) accuracy of test fingerprints against the train fingerprints, "
                    "both computed by the artifact under test")
    return ProxyTask("japanese_vowels->gcode_fingerprint", "speaker (9) retrieval by fingerprint k-NN; series "
                     "resampled to 64 steps, 12 channels projected to 135, 4 channels quantised to 5 levels",
                     tr, ytr, _calibration(tr), eval_inputs, (metric,),
                     _hash("gcode", digest, inspect.getsource(gcode_task)))


def gcode_decoder_task(memory_fn: Callable[[Arrays], np.ndarray], bos_id: int, pad_id: int,
                       step_len: int) -> ProxyTask:
    """Decode the speaker as one command token (id 5 + class) from the trained encoder's memory after BOS:
    ``memory_fn`` maps the encoder task's inputs to its memory, the tokens are BOS then ``step_len - 1`` PADs."""
    base = gcode_task()

    def to_inputs(inputs: Arrays) -> Arrays:
        n = len(inputs["continuous"])
        tokens = np.full((n, step_len), pad_id, np.int64)
        tokens[:, 0] = bos_id
        return {"memory": memory_fn(inputs), "tokens": tokens}

    n_query = base.metrics[0].n_units
    tr = to_inputs(base.train_inputs)
    ev = to_inputs({k: v[:n_query] for k, v in base.eval_inputs.items()})
    _, test, _, _, _ = _vowels()
    metrics = (top1_metric("next_logits", test.labels, "token_top1", chance=1 / 9, offset=5),)
    return ProxyTask("japanese_vowels->gcode_decoder_step", "next token after BOS = command token 5 + speaker, "
                     "from the memory of the trained gcode_fingerprint encoder", tr, base.train_labels,
                     _calibration(tr), ev, metrics,
                     _hash("gcode_dec", base.data_hash, bos_id, pad_id, step_len,
                           inspect.getsource(gcode_decoder_task)))


# ------------------------------------------------------------------------------------------------ TinyLaDeDa

LADEDA_EVAL_PHOTOS = ("coffee", "hubble_deep_field", "brick", "china", "motorcycle_right")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def fake_of(crop: np.ndarray, mode: str) -> np.ndarray:
    """x2 down-sampling (2x2 mean) then x2 up-sampling (nearest or bilinear) of a [3, H, W] float crop."""
    c, h, w = crop.shape
    small = crop.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    if mode == "nearest":
        return small.repeat(2, axis=1).repeat(2, axis=2)
    import torch
    import torch.nn.functional as F

    up = F.interpolate(torch.from_numpy(small[None]), scale_factor=2, mode="bilinear", align_corners=False)
    return up[0].numpy()


def _ladeda_split(photos: list[tuple[str, np.ndarray]], per_photo: int, size: int, seed: int) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for name, img in photos:
        h, w, _ = img.shape
        for j in range(per_photo):
            y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            crop = img[y:y + size, x:x + size].astype(np.float32).transpose(2, 0, 1) / 255.0
            mode = "nearest" if (j + len(name)) % 2 else "bilinear"
            fake = 0.5 * crop + 0.5 * fake_of(crop, mode)  # half-strength trace: keeps the AUC off its ceiling
            for label, im in ((0, crop), (1, fake)):
                images.append((im - IMAGENET_MEAN) / IMAGENET_STD)
                labels.append(label)
    return np.stack(images).astype(np.float32), np.array(labels, np.int64)


def ladeda_task(output: str) -> ProxyTask:
    """Real 256x256 crops of held-out photos vs their down/up-sampled fakes; train crops are 64x64 (fully conv)."""
    photos, digest = datasets.photos()
    train_photos = [p for p in photos if p[0] not in LADEDA_EVAL_PHOTOS]
    eval_photos = [p for p in photos if p[0] in LADEDA_EVAL_PHOTOS]
    xtr, ytr = _ladeda_split(train_photos, 48, 64, seed=1)
    xev, yev = _ladeda_split(eval_photos, 16, 256, seed=2)
    xcal, _ = _ladeda_split(train_photos, 3, 256, seed=3)

    def score(outs: Arrays, idx: np.ndarray) -> float:
        logits = outs[output].reshape(len(outs[output]), -1).mean(axis=1)
        return auc(logits[idx], yev[idx])

    metric = Metric("auc", score, len(yev), 0.5, description=f"ROC AUC of the mean of {output} (fake = 1)")
    return ProxyTask("photos->tiny_ladeda", "real crops of bundled photos (label 0) vs the same crops down- and "
                     "re-up-sampled x2 (nearest or bilinear; label 1); train on 10 photos, eval on 5 held-out ones",
                     {"input": xtr}, ytr, {"input": xcal}, {"input": xev}, (metric,),
                     _hash("ladeda", digest, LADEDA_EVAL_PHOTOS, inspect.getsource(ladeda_task)))


# ------------------------------------------------------------------------------------------------------ chess

BOOK_POSITIONS = 2400
ENDGAME_POSITIONS = 2400
ENDGAME_MATERIAL = ("KQvK", "KRvK", "KPvK", "KBNvK", "KPvKP", "KRvKP", "KQvKR", "KBvKP", "KNvKP", "KBPvK", "KNNvK")


def _book_positions(book_path: str, limit: int, move_to_index: Callable[[Any], int]) -> list[tuple[str, int]]:
    """(fen, move index of the heaviest book move) breadth-first from the start position through the book."""
    import chess
    import chess.polyglot

    out, seen = [], set()
    frontier = [chess.Board()]
    with chess.polyglot.open_reader(book_path) as reader:
        while frontier and len(out) < limit:
            nxt = []
            for board in frontier:
                entries = sorted(reader.find_all(board), key=lambda e: (-e.weight, e.move.uci()))
                if not entries:
                    continue
                key = board.fen()
                if key in seen:
                    continue
                seen.add(key)
                out.append((key, move_to_index(entries[0].move)))
                for e in entries:
                    child = board.copy(stack=False)
                    child.push(e.move)
                    nxt.append(child)
                if len(out) >= limit:
                    break
            frontier = nxt
    return out


def _endgames(tb_dir: str, limit: int, seed: int = 11) -> list[tuple[str, int]]:
    """(fen, WDL sign from the side to move) for seeded random legal endgames labelled by the syzygy tables."""
    import chess
    import chess.syzygy

    rng = np.random.default_rng(seed)
    out = []
    with chess.syzygy.open_tablebase(tb_dir) as tb:
        attempts = 0
        while len(out) < limit and attempts < limit * 50:
            attempts += 1
            material = ENDGAME_MATERIAL[attempts % len(ENDGAME_MATERIAL)]
            board = chess.Board(None)
            squares = rng.permutation(64)
            ok = True
            for k, (color, letter) in enumerate([(chess.WHITE, c) for c in material.split("v")[0]]
                                                + [(chess.BLACK, c) for c in material.split("v")[1]]):
                sq = int(squares[k])
                piece = chess.Piece.from_symbol(letter if color == chess.WHITE else letter.lower())
                if piece.piece_type == chess.PAWN and chess.square_rank(sq) in (0, 7):
                    ok = False
                    break
                board.set_piece_at(sq, piece)
            board.turn = bool(rng.integers(2))
            if not ok or not board.is_valid() or board.is_game_over():
                continue
            try:
                wdl = tb.probe_wdl(board)
            except (KeyError, chess.syzygy.MissingTableError):
                continue
            out.append((board.fen(), int(np.sign(wdl))))
    return out


def chess_task(board_to_input: Callable[[Any], np.ndarray], legal_move_mask: Callable[[Any], np.ndarray],
               move_to_index: Callable[[Any], int]) -> ProxyTask:
    """Policy: heaviest polyglot book move (top-1 over legal moves); value: syzygy WDL sign (decisive positions).
    The family's encoding comes as arguments: ``board_to_input(board)`` (the network's input planes),
    ``legal_move_mask(board)`` and ``move_to_index(move)`` (its policy index)."""
    import chess

    data = datasets.chess_data_dir()
    book = _book_positions(str(data / "polyglot" / "performance.bin"), BOOK_POSITIONS, move_to_index)
    ends = _endgames(str(data / "syzygy" / "regular"), ENDGAME_POSITIONS)

    def split(items: list[tuple[str, int]]) -> tuple[list, list]:
        test = [it for it in items if int(hashlib.sha256(it[0].encode()).hexdigest(), 16) % 4 == 0]
        return [it for it in items if it not in test], test

    book_tr, book_ev = split(book)
    end_tr, end_ev = split(ends)

    def encode(items: list[tuple[str, int]]) -> np.ndarray:
        return np.stack([board_to_input(chess.Board(fen)) for fen, _ in items]).astype(np.float32)

    train_inputs = {"board_input": np.concatenate([encode(book_tr), encode(end_tr)])}
    # Train labels: [policy index or -1, value target or nan-coded 2].
    train_labels = np.array([(mv, 2) for _, mv in book_tr] + [(-1, v) for _, v in end_tr], np.int64)
    eval_inputs = {"board_input": np.concatenate([encode(book_ev), encode(end_ev)])}
    nb = len(book_ev)
    masks = np.stack([legal_move_mask(chess.Board(fen)) for fen, _ in book_ev])
    policy_y = np.array([mv for _, mv in book_ev])
    decisive = np.array([i for i, (_, v) in enumerate(end_ev) if v != 0])
    value_y = np.array([v for _, v in end_ev])[decisive]

    def policy(outs: Arrays) -> np.ndarray:
        logp = np.where(masks, outs["policy_output"][:nb], -np.inf)
        return (np.argmax(logp, axis=1) == policy_y).astype(np.float64)

    def value(outs: Arrays) -> np.ndarray:
        v = outs["value_output"][nb:, 0][decisive]
        return (np.sign(v) == value_y).astype(np.float64)

    legal = float(np.mean(1.0 / masks.sum(axis=1)))
    metrics = (
        Metric("policy_top1", None, nb, legal, unit_scores=policy,
               description="top-1 over legal moves vs the heaviest book move"),
        Metric("value_sign", None, len(decisive), float(max(np.mean(value_y > 0), np.mean(value_y < 0))),
               unit_scores=value,
               description="sign(value) == syzygy WDL sign on decisive endgames (chance = majority class)"),
    )
    return ProxyTask("chess_sdist->alphazero", "policy: heaviest move of the bundled polyglot book "
                     "(performance.bin) on book positions; value: WDL sign from the bundled syzygy tables on "
                     f"seeded random endgames ({', '.join(ENDGAME_MATERIAL)})", train_inputs, train_labels,
                     _calibration(train_inputs), eval_inputs, metrics,
                     _hash("chess", BOOK_POSITIONS, ENDGAME_POSITIONS, ENDGAME_MATERIAL, datasets.file_sha256(
                         data / "polyglot" / "performance.bin"), inspect.getsource(chess_task),
                         inspect.getsource(_book_positions), inspect.getsource(_endgames)))
