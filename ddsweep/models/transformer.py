"""A pack of K encoder-decoder Transformers with stacked weights, trained in one step.

Every linear layer of all K members is one batched matmul (torch.baddbmm over the member
dimension); attention runs as one scaled_dot_product_attention over members x sentences;
LayerNorm normalizes without affine and applies each member's scale and shift; embeddings
are one gather from the members' stacked tables. Members never mix: a member's outputs,
losses and gradients depend only on its own weights and sentences. As in the conv packs,
parameters live in one flat tensor `flat` [K, P] (laid out as the list of
ddsweep.models.transformer_arch); each step splits a leaf copy of it into the layers and
autograd writes the gradient of the summed per-member losses into `grad` [K, P].

The architecture (Vaswani et al. 2017 as in fairseq's transformer_iwslt_de_en, no dropout):
- `layers` encoder and `layers` decoder layers (default 6); d_model = the job's width;
  feed-forward width ffn_ratio x d_model (default 4); `heads` heads (default 4, fairseq's
  IWSLT setting; the grid refuses heads that do not divide d_model); ReLU.
- `norm: post` (default): LayerNorm after each residual sum, the original Transformer and
  fairseq's default (normalize_before=False); `norm: pre`: LayerNorm before each sublayer,
  plus a final LayerNorm on the encoder's and the decoder's output.
- token embeddings scaled by sqrt(d_model) plus sinusoidal positions (Vaswani's: sin on even,
  cos on odd dimensions, positions from 0);
- `embeddings: tied` (default): the decoder's input embedding is also its output projection
  (fairseq's --share-decoder-input-output-embed); `separate`: an output projection of its own.
  Source and target vocabularies, and so their embeddings, are always separate.

Inputs are the rows of ddsweep.data.translation ([source | target] token ids). Each batch is
cut to its longest source and target (over the pack's members) on the device; padded keys
are masked, padded targets carry no loss, so the cut changes no number beyond rounding.

Loss: the mean over the batch's target tokens (</s> included, <pad> not) of the cross-entropy
with label smoothing eps (torch's definition: (1 - eps) x NLL + eps x the mean over the
vocabulary of -log p), eps per member (the `label_smoothing` train key). Evaluation reports
per-token cross-entropy without smoothing and the token error (argmax != target).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ddsweep.data.translation import PAD, TextInfo
from ddsweep.models.transformer_arch import TransformerArch, arch_from_config

EVAL_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30}  # logits of one evaluation chunk (x a few)
LN_EPS = 1e-5


def sinusoids(length: int, d: int) -> torch.Tensor:
    """Vaswani's positional encodings [length, d]: PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...)."""
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return pe.float()


def _attend(q, k, v, mask, causal: bool):
    """softmax(q k^T / sqrt(d) + masks) v over [G, H, L, d]. On a GPU torch's fused kernel; on a CPU the
    plain three ops, faster there at these sizes (short sentences, narrow heads; measured on 1 thread of
    a busy machine, d_model 32, 2 layers, 4 heads, 64 sentences of ~10 tokens: a training step took
    65 ms, against 81 ms with torch's CPU flash-attention kernel)."""
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    if causal:
        Lq, Lk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).triu_(1), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class PackedTransformer:
    """A ddsweep.models.PackedModel."""

    LAYOUT = 1  # version of the parameter layout, kept in checkpoints
    has_running_stats = False  # no BatchNorm (and no dropout): training and evaluation compute one function
    buffers = None

    def __init__(self, members: int, arch: TransformerArch, src_len: int, tgt_len: int, precision: str = "fp32",
                 device="cpu"):
        self.members, self.arch, self.width = members, arch, arch.d_model
        self.src_len, self.tgt_len = src_len, tgt_len
        self.device = torch.device(device)
        self.sizes = [math.prod(p.shape) for p in arch.params]
        self.offsets = [0]
        for s in self.sizes:
            self.offsets.append(self.offsets[-1] + s)
        self.flat = torch.zeros(members, self.offsets[-1], device=device)
        self.grad = torch.zeros_like(self.flat)
        self.smoothing = torch.zeros(members, 1, 1, device=device)
        self.pe = sinusoids(max(src_len, tgt_len), arch.d_model).to(device)
        self.amp_dtype = torch.bfloat16 if precision == "bf16" else None

    @classmethod
    def from_config(cls, config: dict, members: int, width: int, text: TextInfo, device="cpu"):
        from ddsweep.models.conv import resolve_precision

        if text is None:
            raise ValueError("the transformer trains on a text dataset (translation, synthetic_translation)")
        arch = arch_from_config(config, text.src_vocab, text.tgt_vocab, width)
        precision = resolve_precision(config["train"].get("precision", "auto"), device)
        return cls(members, arch, text.src_len, text.tgt_len, precision, device)

    def configure(self, recipes: list[dict]) -> None:
        """Per-member settings from the members' training recipes: label smoothing."""
        eps = [r.get("label_smoothing", 0.0) for r in recipes]
        self.smoothing = torch.tensor(eps, dtype=torch.float32, device=self.flat.device).view(-1, 1, 1)

    def train(self, mode: bool = True) -> PackedTransformer:
        """No modes: no dropout, no BatchNorm."""
        return self

    def reset_stats(self, k: int) -> None:
        """Nothing to reset: no running statistics."""

    @torch.no_grad()
    def init_member(self, k: int, generator: torch.Generator, width: int | None = None) -> None:
        """Draw member k's weights from its own generator (see ddsweep.models.transformer_arch)."""
        self.flat[k].zero_()
        for i, p in enumerate(self.arch.params):
            block = self.flat[k, self.offsets[i]:self.offsets[i + 1]].view(p.shape)
            if p.init == "xavier":
                bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                block.copy_((torch.rand(p.shape, generator=generator) * 2 - 1).mul_(bound))
            elif p.init in ("embed", "normal"):
                block.copy_(torch.randn(p.shape, generator=generator).mul_(p.fan_in ** -0.5))
                if p.init == "embed":
                    block[PAD].zero_()
            elif p.init == "ones":
                block.fill_(1.0)

    # ------------------------------------------------------------------ compute

    def _weights(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each parameter as a [K, *shape] view of flat parameters p [K, P] (differentiable through p)."""
        K = p.shape[0]
        return {spec.name: piece.view(K, *spec.shape)
                for spec, piece in zip(self.arch.params, torch.split(p, self.sizes, dim=1))}

    @staticmethod
    def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """x [K, ..., in] times each member's w [K, out, in] (+ b [K, out]) -> [K, ..., out]."""
        K, shape = x.shape[0], x.shape[1:-1]
        flat = x.reshape(K, -1, x.shape[-1])
        y = torch.bmm(flat, w.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
        return y.view(K, *shape, w.shape[1])

    @staticmethod
    def _norm(x: torch.Tensor, W: dict, name: str) -> torch.Tensor:
        K = x.shape[0]
        view = (K,) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return torch.addcmul(W[f"{name}.bias"].view(view), F.layer_norm(x, x.shape[-1:], eps=LN_EPS),
                             W[f"{name}.weight"].view(view))

    def _attention(self, W: dict, name: str, x: torch.Tensor, memory: torch.Tensor | None,
                   mask: torch.Tensor | None, causal: bool = False) -> torch.Tensor:
        """nn.MultiheadAttention's computation for every member: x [K, B, Lq, D], memory [K, B, Lk, D]
        (None: self-attention), mask [K*B, 1, 1, Lk] (True: attend)."""
        K, B, Lq, D = x.shape
        H = self.arch.heads
        w, b = W[f"{name}.in_proj_weight"], W[f"{name}.in_proj_bias"]
        if memory is None:
            q, k, v = self._linear(x, w, b).chunk(3, dim=-1)
        else:
            q = self._linear(x, w[:, :D], b[:, :D])
            k, v = self._linear(memory, w[:, D:], b[:, D:]).chunk(2, dim=-1)

        def heads(t):  # [K, B, L, D] -> [K*B, H, L, D/H]
            return t.reshape(K * B, t.shape[2], H, D // H).transpose(1, 2)

        o = _attend(heads(q), heads(k), heads(v), mask, causal)
        o = o.transpose(1, 2).reshape(K, B, Lq, D)
        return self._linear(o, W[f"{name}.out_proj.weight"], W[f"{name}.out_proj.bias"])

    def _feed_forward(self, W: dict, name: str, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self._linear(x, W[f"{name}.linear1.weight"], W[f"{name}.linear1.bias"]))
        return self._linear(h, W[f"{name}.linear2.weight"], W[f"{name}.linear2.bias"])

    def _embed(self, table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [K, B, L] -> [K, B, L, D]: member k's rows of its table [K, V, D], scaled, plus positions."""
        K, V, D = table.shape
        idx = tokens.long() + (torch.arange(K, device=tokens.device) * V).view(K, 1, 1)
        return F.embedding(idx, table.reshape(K * V, D)) * math.sqrt(D) + self.pe[:tokens.shape[-1]]

    def _decoder_states(self, W: dict, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Decoder outputs [K, B, T, D] for sources [K, B, S] and decoder inputs [K, B, T]."""
        K, B, S = src.shape
        pre = self.arch.norm == "pre"
        mask = (src != PAD).view(K * B, 1, 1, S)
        x = self._embed(W["src_embed.weight"], src)
        for i in range(self.arch.layers):
            n = f"encoder.layers.{i}"
            if pre:
                x = x + self._attention(W, f"{n}.self_attn", self._norm(x, W, f"{n}.norm1"), None, mask)
                x = x + self._feed_forward(W, n, self._norm(x, W, f"{n}.norm2"))
            else:
                x = self._norm(x + self._attention(W, f"{n}.self_attn", x, None, mask), W, f"{n}.norm1")
                x = self._norm(x + self._feed_forward(W, n, x), W, f"{n}.norm2")
        memory = self._norm(x, W, "encoder.norm") if pre else x
        y = self._embed(W["tgt_embed.weight"], tgt_in)
        for i in range(self.arch.layers):
            n = f"decoder.layers.{i}"
            if pre:
                y = y + self._attention(W, f"{n}.self_attn", self._norm(y, W, f"{n}.norm1"), None, None, causal=True)
                y = y + self._attention(W, f"{n}.multihead_attn", self._norm(y, W, f"{n}.norm2"), memory, mask)
                y = y + self._feed_forward(W, n, self._norm(y, W, f"{n}.norm3"))
            else:
                y = self._norm(y + self._attention(W, f"{n}.self_attn", y, None, None, causal=True), W, f"{n}.norm1")
                y = self._norm(y + self._attention(W, f"{n}.multihead_attn", y, memory, mask), W, f"{n}.norm2")
                y = self._norm(y + self._feed_forward(W, n, y), W, f"{n}.norm3")
        return self._norm(y, W, "decoder.norm") if pre else y

    def _logits(self, W: dict, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        y = self._decoder_states(W, src, tgt_in)
        out = W["out_proj.weight"] if self.arch.embeddings == "separate" else W["tgt_embed.weight"]
        return self._linear(y, out, None)  # [K, B, T, V]

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows [K, B, S+T] -> (source [K, B, s], decoder input [K, B, t], decoder target [K, B, t]), cut
        to the longest source s and target t among them (one device sync)."""
        src, tgt = x[..., :self.src_len], x[..., self.src_len:]
        s, t = torch.stack([(src != PAD).sum(-1).max(), (tgt != PAD).sum(-1).max()]).tolist()
        return src[..., :max(s, 1)], tgt[..., :max(t - 1, 1)], tgt[..., 1:max(t, 2)]

    @staticmethod
    def _token_terms(logits: torch.Tensor, target: torch.Tensor):
        """(NLL, -mean log p over the vocabulary, mask of real tokens), each [K, B, T], in float32."""
        z = logits.float()
        lse = torch.logsumexp(z, dim=-1)
        nll = lse - z.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
        return nll, lse - z.mean(-1), target != PAD

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor | None = None, loss: str = "cross_entropy",
                      with_loss: bool = True) -> torch.Tensor:
        """Per-member mean (label-smoothed) token loss [K] on a batch of rows x [K, B, S+T]; writes its
        gradient into `grad`. (`y`, the image models' labels, is unused: the targets are in x.)"""
        src, tgt_in, tgt_out = self.split(x)
        p = self.flat.detach().requires_grad_(True)
        with self._autocast():
            logits = self._logits(self._weights(p), src, tgt_in)
        nll, smooth, mask = self._token_terms(logits, tgt_out)
        eps = self.smoothing
        per_token = nll if not bool((eps > 0).any()) else (1 - eps) * nll + eps * smooth
        per_member = (per_token * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
        (g,) = torch.autograd.grad(per_member.sum(), p)
        self.grad.copy_(g)
        return per_member.detach()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rows [K, B, S+T] -> float32 logits [K, B, t, V] of the decoder targets (cut as in `split`)."""
        src, tgt_in, _ = self.split(x)
        with self._autocast():
            return self._logits(self._weights(self.flat), src, tgt_in).float()

    __call__ = forward

    @torch.no_grad()
    def token_metrics(self, x: torch.Tensor) -> torch.Tensor:
        """[K, 3]: per member the summed token cross-entropy (no smoothing), the wrongly predicted
        tokens and the tokens of its rows x [K, N, S+T]. Rows are taken in order of length (each
        member's own), in chunks, so that short sentences are not padded to long ones."""
        K, N, _ = x.shape
        lengths = (x != PAD).sum(-1)
        order = torch.sort(lengths, dim=1, stable=True).indices
        x = torch.take_along_dim(x, order.unsqueeze(-1), dim=1)
        chunk = self.eval_chunk
        out = torch.zeros(K, 3, device=x.device, dtype=torch.float64)
        for i in range(0, N, chunk):
            src, tgt_in, tgt_out = self.split(x[:, i:i + chunk])
            with self._autocast():
                logits = self._logits(self._weights(self.flat), src, tgt_in)
            nll, _, mask = self._token_terms(logits, tgt_out)
            wrong = (logits.argmax(-1) != tgt_out.long()) & mask
            out[:, 0] += (nll * mask).sum((1, 2)).double()
            out[:, 1] += wrong.sum((1, 2)).double()
            out[:, 2] += mask.sum((1, 2)).double()
        return out

    @property
    def eval_chunk(self) -> int:
        """Sentences per member in one evaluation pass: logits (and their float copy and
        softmax) of about EVAL_BYTES for the whole pack."""
        per = 4 * 4 * self.tgt_len * self.arch.tgt_vocab * self.members
        budget = EVAL_BYTES["cuda" if self.device.type == "cuda" else "cpu"]
        return int(max(8, min(4096, budget // max(1, per))))

    def layer_slices(self) -> list[tuple[int, int]]:
        """Column ranges [a, b) of `flat` holding each parameter tensor of a member (for LARS)."""
        return list(zip(self.offsets[:-1], self.offsets[1:]))

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one forward pass of one member over a pair of the longest lengths."""
        return int(2 * self.arch.macs(self.src_len, self.tgt_len - 1))
