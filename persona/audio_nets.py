"""AD-NeRF's audio networks and the neighbour-window gatherer, shared by ours, AD-NeRF and DFRF.

- :class:`AudioNet`: a [B,16,29] DeepSpeech window -> one feature vector (AD-NeRF's conv stack).
- :class:`AudioAttNet`: attention over the features of the 8 neighbouring frames (AD-NeRF's smoother).
- :func:`gather_neighbour_windows`: the windows of the frames around each frame of a batch.
- :func:`audio_track`: frame number -> window for every frame of a dataset.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

AUDIO_WINDOW = 16  # audio feature frames per video frame (AD-NeRF's aud.npy: [N,16,29])
AUDIO_FEATURES = 29  # DeepSpeech character logits per 20 ms
AUDIO_DIM = 64  # AD-NeRF's dim_aud
AUDIO_SMOOTH_FRAMES = 8  # AD-NeRF's smoothing window (seq_len of AudioAttNet)
NEIGHBOUR_PADS = ("zero", "own")


class AudioNet(nn.Module):
    """AD-NeRF's audio feature net: a window of DeepSpeech features -> one feature vector.

    Four stride-2 1-D convolutions over time (29 -> 32 -> 32 -> 64 -> 64 channels, kernel 3,
    LeakyReLU 0.02) take the 16 time steps down to 1, then two linear layers (64 -> 64 -> out).

    ``x`` [B,16,29] -> [B,out_dim] (out_dim = 64 by default, AD-NeRF's ``dim_aud``).
    """

    def __init__(self, out_dim: int = AUDIO_DIM, window: int = AUDIO_WINDOW, features: int = AUDIO_FEATURES):
        super().__init__()
        if window != 16:
            raise ValueError(f"AudioNet: window={window}, expected 16 (four stride-2 convs reduce 16 -> 1)")
        self.window = window
        self.features = features
        self.out_dim = out_dim
        self.convs = nn.Sequential(
            nn.Conv1d(features, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.02, inplace=True),  # 16 -> 8
            nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.02, inplace=True),  # 8 -> 4
            nn.Conv1d(32, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02, inplace=True),  # 4 -> 2
            nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02, inplace=True),  # 2 -> 1
        )
        self.head = nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(0.02, inplace=True), nn.Linear(64, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.window, self.features):
            raise ValueError(f"AudioNet: audio windows of shape [B,{self.window},{self.features}] expected, got {list(x.shape)}")
        h = self.convs(x.transpose(1, 2))  # [B,29,16] -> [B,64,1]
        return self.head(h.squeeze(-1))


class AudioAttNet(nn.Module):
    """AD-NeRF's temporal attention: weights over neighbouring frames' audio features.

    Five 1-D convolutions over the sequence (score_dims -> 16 -> 8 -> 4 -> 2 -> 1 channels,
    kernel 3, LeakyReLU 0.02) give one score per frame, a linear layer over the ``seq_len``
    scores and a softmax give the weights, and the output is the weighted sum of the input
    features (all ``dim`` of them). The scores read the first ``score_dims`` features:
    ``None`` = all ``dim`` (persona's default, AD-NeRF with dim_aud 64); 32 = the release
    (HFA-GP's ``AudioAttNet(dim_aud=32)`` scores from the first 32 of the 64 features).

    ``x`` [B,seq_len,dim] (seq_len = 8) -> [B,dim]. Also accepts AD-NeRF's unbatched [seq_len,dim].
    """

    def __init__(self, dim: int = AUDIO_DIM, seq_len: int = AUDIO_SMOOTH_FRAMES, score_dims: int | None = None):
        super().__init__()
        if score_dims is not None and not 0 < score_dims <= dim:
            raise ValueError(f"AudioAttNet: score_dims={score_dims}; expected 1..{dim} or None (all)")
        self.dim = dim
        self.seq_len = seq_len
        self.score_dims = score_dims or dim
        chans = [self.score_dims, 16, 8, 4, 2, 1]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv1d(cin, cout, 3, stride=1, padding=1), nn.LeakyReLU(0.02, inplace=True)]
        self.scores = nn.Sequential(*layers)
        self.weights = nn.Linear(seq_len, seq_len)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B,seq_len,dim] -> attention weights [B,seq_len] (softmax, sums to 1)."""
        s = self.scores(x[..., :self.score_dims].transpose(1, 2)).squeeze(1)  # [B,seq_len]
        return torch.softmax(self.weights(s), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.seq_len, self.dim):
            raise ValueError(f"AudioAttNet: features of shape [B,{self.seq_len},{self.dim}] expected, got {list(x.shape)}")
        out = (self.attention(x).unsqueeze(-1) * x).sum(dim=1)
        return out[0] if unbatched else out


def gather_neighbour_windows(
    index: torch.Tensor, audio: torch.Tensor, track: dict[int, torch.Tensor] | None = None, seq_len: int = AUDIO_SMOOTH_FRAMES,
    pad: str = "zero",
) -> torch.Tensor:
    """The audio windows of the ``seq_len`` frames around each frame of a batch.

    ``index`` [B] frame numbers, ``audio`` [B,16,29] their own windows; ``track`` maps frame
    number -> window [16,29] (the whole split's audio, see :func:`audio_track`). With no track,
    the batch itself is the track (sequential test batches smooth within the batch). Frames
    outside the track are, by ``pad``: ``"zero"`` windows (as AD-NeRF and the release pad at the
    ends of the video; ours and AD-NeRF's training), or the frame's ``"own"`` window (AD-NeRF
    rendering without a track: a lone frame then gets exactly its unsmoothed code, since the
    attention weights sum to 1).
    Returns [B,seq_len,16,29]; window ``j`` is frame ``index - seq_len//2 + j``.
    """
    if track is None:
        track = {int(i): a for i, a in zip(index.tolist(), audio)}
    if pad not in NEIGHBOUR_PADS:
        raise ValueError(f"gather_neighbour_windows: pad={pad!r}; expected one of {NEIGHBOUR_PADS}")
    zero = torch.zeros_like(audio[0])
    rows = []
    for b, i in enumerate(index.tolist()):
        fill = zero if pad == "zero" else audio[b]
        rows.append(torch.stack([track.get(int(i) + off, fill).to(audio) for off in range(-(seq_len // 2), seq_len - seq_len // 2)]))
    return torch.stack(rows)


def audio_track(dataset: Any) -> dict[int, torch.Tensor]:
    """Frame number -> audio window [16,29] for every frame of a :class:`FrameDataset`.

    Uses ``dataset.audio`` / ``dataset.indices`` when the dataset exposes them (no image
    decoding), else reads every sample once.
    """
    audio, indices = getattr(dataset, "audio", None), getattr(dataset, "indices", None)
    if isinstance(audio, (torch.Tensor,)) and indices is not None and len(indices) == len(audio):
        return {int(i): a.float() for i, a in zip(list(indices), audio)}
    track = {}
    for n in range(len(dataset)):
        sample = dataset[n]
        track[int(sample["index"])] = torch.as_tensor(sample["audio"]).float()
    return track
