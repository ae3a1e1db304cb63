"""The conv architectures as plain nn.Modules, one model at a time: the way they are usually written.

Used as the reference the packed models are checked against (same parameter names,
so a member's weights load with load_state_dict) and as the plain arm of the
benchmark (`python -m ddsweep.bench --model mcnn`).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class MCNN(nn.Module):
    """Deep Double Descent's 5-layer CNN of width k (see ddsweep.models.arch.mcnn)."""

    def __init__(self, k: int, channels: int = 3, classes: int = 10):
        super().__init__()
        widths = [channels, k, 2 * k, 4 * k, 8 * k]
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], 3, padding=1))
            setattr(self, f"bn{i}", nn.BatchNorm2d(widths[i]))
        self.fc = nn.Linear(8 * k, classes)

    def forward(self, x):
        for i in range(1, 5):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            if i > 1:
                x = F.max_pool2d(x, 2)
        return self.fc(F.max_pool2d(x, 4).flatten(1))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """kuangliu's PreActResNet18 with stage widths k, 2k, 4k, 8k (see ddsweep.models.arch)."""

    def __init__(self, k: int, channels: int = 3, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, k, 3, 1, 1, bias=False)
        cin = k
        for stage, (planes, stride) in enumerate(zip((k, 2 * k, 4 * k, 8 * k), (1, 2, 2, 2)), 1):
            blocks = []
            for block in range(2):
                blocks.append(PreActBlock(cin, planes, stride if block == 0 else 1))
                cin = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(8 * k, classes)

    def forward(self, x):
        out = self.conv1(x)
        for stage in range(1, 5):
            out = getattr(self, f"layer{stage}")(out)
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


REFERENCE = {"mcnn": MCNN, "preact_resnet18": PreActResNet18}


class TransformerReference(nn.Module):
    """The encoder-decoder Transformer one model at a time, built from torch.nn.Transformer's layers
    (nn.TransformerEncoderLayer / nn.TransformerDecoderLayer, dropout 0, ReLU): the plain model the
    pack is checked against (same parameter names; see ddsweep.models.transformer_arch)."""

    def __init__(self, d_model: int, src_vocab: int, tgt_vocab: int, layers: int = 6, heads: int = 4,
                 ffn_ratio: float = 4, norm: str = "post", embeddings: str = "tied", max_len: int = 256):
        import torch

        from ddsweep.data.translation import PAD
        from ddsweep.models.transformer import sinusoids

        super().__init__()
        d, f, pre = d_model, max(1, int(round(ffn_ratio * d_model))), norm == "pre"
        self.d_model, self.tied = d, embeddings == "tied"
        self.src_embed = nn.Embedding(src_vocab, d, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, d, padding_idx=PAD)
        enc = nn.TransformerEncoderLayer(d, heads, f, dropout=0.0, batch_first=True, norm_first=pre)
        dec = nn.TransformerDecoderLayer(d, heads, f, dropout=0.0, batch_first=True, norm_first=pre)
        self.encoder = nn.TransformerEncoder(enc, layers, norm=nn.LayerNorm(d) if pre else None,
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, layers, norm=nn.LayerNorm(d) if pre else None)
        if not self.tied:
            self.out_proj = nn.Linear(d, tgt_vocab, bias=False)
        self.register_buffer("pe", sinusoids(max_len, d), persistent=False)
        self._pad = PAD
        self._torch = torch

    def forward(self, src, tgt_in):
        """src [B, S], tgt_in [B, T] token ids -> logits [B, T, tgt_vocab]."""
        torch = self._torch
        scale = self.d_model ** 0.5
        x = self.src_embed(src) * scale + self.pe[:src.shape[1]]
        y = self.tgt_embed(tgt_in) * scale + self.pe[:tgt_in.shape[1]]
        pad = src == self._pad
        memory = self.encoder(x, src_key_padding_mask=pad)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        h = self.decoder(y, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=pad)
        w = self.tgt_embed.weight if self.tied else self.out_proj.weight
        return torch.matmul(h, w.T)
