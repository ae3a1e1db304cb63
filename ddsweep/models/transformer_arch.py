"""The encoder-decoder Transformer of Deep Double Descent, described without torch.

The parameters of one member as a list (name, shape, init), named as torch.nn.Transformer's
modules name them (nn.TransformerEncoderLayer / nn.TransformerDecoderLayer: self_attn,
multihead_attn, linear1, linear2, norm1..3), so a member's weights load into the plain
reference (ddsweep.models.reference.TransformerReference) by name; and its cost per
sentence pair, which the coordinator (no torch) uses to size and schedule packs.

d_model is the width axis; the feed-forward width is ffn_ratio x d_model (the paper scales
the fully connected layers with d_model; fairseq's IWSLT model has 512 and 1024, ratio 2;
the original Transformer ratio 4, ddsweep's default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ddsweep.models.arch import Param

MODEL_DEFAULTS = {"layers": 6, "heads": 4, "ffn_ratio": 4, "norm": "post", "embeddings": "tied"}
NORMS = ("post", "pre")
EMBEDDINGS = ("tied", "separate")


def model_options(model: dict) -> dict:
    """A transformer's model section with every option filled in."""
    return {k: model.get(k) if model.get(k) is not None else d for k, d in MODEL_DEFAULTS.items()}


@dataclass(frozen=True)
class TransformerArch:
    d_model: int
    layers: int
    heads: int
    ffn: int
    norm: str
    embeddings: str
    src_vocab: int
    tgt_vocab: int
    params: tuple[Param, ...]

    @property
    def size(self) -> int:
        return sum(math.prod(p.shape) for p in self.params)

    def macs(self, src_tokens: float, tgt_tokens: float) -> float:
        """Multiply-adds of one forward pass over a pair with these lengths (matmuls and attention)."""
        d, f, layers, s, t = self.d_model, self.ffn, self.layers, src_tokens, tgt_tokens
        enc = s * (4 * d * d + 2 * d * f) + 2 * s * s * d
        dec = t * (4 * d * d + 2 * d * d + 2 * d * f) + s * 2 * d * d + 2 * t * t * d + 2 * t * s * d
        return layers * (enc + dec) + t * d * self.tgt_vocab

    def activations(self, src_tokens: float, tgt_tokens: float) -> float:
        """Elements one pair's training step keeps for the backward pass (about: per layer and token
        a dozen d-vectors and two f-vectors, the attention maps per head, the logits three times)."""
        d, f, h, layers, s, t = self.d_model, self.ffn, self.heads, self.layers, src_tokens, tgt_tokens
        per_layer = (s + t) * (12 * d + 2 * f) + t * 6 * d + h * (s * s + t * t + t * s) * 2
        return layers * per_layer + 3 * t * self.tgt_vocab


def _linear(params: list, name: str, fin: int, fout: int) -> None:
    params.append(Param(f"{name}.weight", (fout, fin), "xavier", fin))
    params.append(Param(f"{name}.bias", (fout,), "zeros"))


def _attention(params: list, name: str, d: int) -> None:
    params.append(Param(f"{name}.in_proj_weight", (3 * d, d), "xavier", d))
    params.append(Param(f"{name}.in_proj_bias", (3 * d,), "zeros"))
    _linear(params, f"{name}.out_proj", d, d)


def _norm(params: list, name: str, d: int) -> None:
    params.append(Param(f"{name}.weight", (d,), "ones"))
    params.append(Param(f"{name}.bias", (d,), "zeros"))


def transformer(d_model: int, src_vocab: int, tgt_vocab: int, layers: int = 6, heads: int = 4,
                ffn_ratio: float = 4, norm: str = "post", embeddings: str = "tied") -> TransformerArch:
    """The member's parameters: embeddings (N(0, 1/d_model), fairseq's; the <pad> row 0), per layer the attention
    in- and out-projections, the feed-forward layers and LayerNorms (matrices Xavier-uniform as
    nn.Transformer initializes them, biases 0 as fairseq does), a final LayerNorm per side with
    pre-norm, and an output projection of its own with `embeddings: separate` (N(0, 1/d_model), no
    bias; else the decoder's input embedding: fairseq's --share-decoder-input-output-embed, which its
    IWSLT recipe uses). Source and target embeddings are always separate (two vocabularies)."""
    d, f = d_model, max(1, int(round(ffn_ratio * d_model)))
    params: list[Param] = [Param("src_embed.weight", (src_vocab, d), "embed", d),
                           Param("tgt_embed.weight", (tgt_vocab, d), "embed", d)]
    for i in range(layers):
        pre = f"encoder.layers.{i}"
        _attention(params, f"{pre}.self_attn", d)
        _linear(params, f"{pre}.linear1", d, f)
        _linear(params, f"{pre}.linear2", f, d)
        _norm(params, f"{pre}.norm1", d)
        _norm(params, f"{pre}.norm2", d)
    if norm == "pre":
        _norm(params, "encoder.norm", d)
    for i in range(layers):
        pre = f"decoder.layers.{i}"
        _attention(params, f"{pre}.self_attn", d)
        _attention(params, f"{pre}.multihead_attn", d)
        _linear(params, f"{pre}.linear1", d, f)
        _linear(params, f"{pre}.linear2", f, d)
        for j in (1, 2, 3):
            _norm(params, f"{pre}.norm{j}", d)
    if norm == "pre":
        _norm(params, "decoder.norm", d)
    if embeddings == "separate":
        params.append(Param("out_proj.weight", (tgt_vocab, d), "normal", d))
    return TransformerArch(d, layers, heads, f, norm, embeddings, src_vocab, tgt_vocab, tuple(params))


def arch_from_config(config: dict, src_vocab: int, tgt_vocab: int, width: int | None = None) -> TransformerArch:
    o = model_options(config["model"])
    return transformer(width or config["width"], src_vocab, tgt_vocab, o["layers"], o["heads"], o["ffn_ratio"],
                       o["norm"], o["embeddings"])
