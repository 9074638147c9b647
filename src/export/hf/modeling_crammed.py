"""cram's crammed-bert encoder for transformers (written by `cram export hf`).

The architecture of the Cramming paper (Geiping & Goldstein 2022) as cram
trains it: word embeddings plus scaled sinusoidal positions, a LayerNorm,
pre-LN blocks without biases (attention, then a GELU-gated feed-forward), a
final LayerNorm and a decoder tied to the word embeddings. With
position_embedding_type "rotary" (cram's `tiny`) the embeddings carry no
positions and attention rotates q and k instead, in the rotate-half
convention (dimension i pairs with i + head_dim/2). Parameter names are
cram's, except ffn.in/ffn.out, which are ffn.up/ffn.down here.

    AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class CrammedConfig(PretrainedConfig):
    model_type = "crammed-bert"

    def __init__(
        self,
        vocab_size=32768,
        hidden_size=768,
        num_hidden_layers=16,
        num_attention_heads=12,
        intermediate_size=3072,  # width of ffn.up: value and gate halves
        layer_norm_eps=1e-12,
        max_position_embeddings=128,
        initializer_range=0.02,
        position_embedding_type="scaled-sinusoidal",
        rope_theta=10000.0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.layer_norm_eps = layer_norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        super().__init__(**kwargs)


class LayerNorm(nn.Module):
    """LayerNorm with a scale and no shift (cram builds norms without biases here)."""

    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, None, self.eps)


class ScaledSinusoid(nn.Module):
    """scale * pe[t], pe[t, 2i] = sin(t * 10000^(-2i/width)), pe[t, 2i+1] = cos(same).

    The table is computed in float64 like cram's, and on the fly rather than
    kept in a buffer, so that it never depends on how the model was loaded.
    """

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, seq_len, width):
        device = self.scale.device
        t = torch.arange(seq_len, dtype=torch.float64, device=device)[:, None]
        column = torch.arange(width, device=device)
        angle = t * 10000.0 ** (-2.0 * (column // 2).to(torch.float64) / width)
        pe = torch.where(column % 2 == 0, angle.sin(), angle.cos())
        return self.scale * pe.to(self.scale.dtype)


def rotate(x, theta, sign=1.0):
    """x (…, t, d) rotated by t * theta^(-2i/d), dimension i paired with i + d/2.

    The angles are computed in float64 and rounded to x's type, as cram does.
    """
    t, d = x.shape[-2], x.shape[-1]
    half = d // 2
    i = torch.arange(half, dtype=torch.float64, device=x.device)
    angle = sign * torch.arange(t, dtype=torch.float64, device=x.device)[:, None] * theta ** (-2.0 * i / d)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    lo, hi = x[..., :half], x[..., half:]
    return torch.cat((lo * cos - hi * sin, hi * cos + lo * sin), dim=-1)


class Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.sinusoidal = config.position_embedding_type == "scaled-sinusoidal"
        if self.sinusoidal:
            self.position = ScaledSinusoid()
        self.norm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, input_ids):
        x = self.word(input_ids)
        if self.sinusoidal:
            x = x + self.position(input_ids.shape[1], x.shape[-1])
        return self.norm(x)


class Attention(nn.Module):
    """Multi-head self-attention over one packed q|k|v projection."""

    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.rope_theta = config.rope_theta if config.position_embedding_type == "rotary" else None
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x, mask):
        b, t, c = x.shape
        d = c // self.heads
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        if self.rope_theta is not None:
            q, k = rotate(q, self.rope_theta), rotate(k, self.rope_theta)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if mask is not None:
            scores = scores + mask
        y = scores.softmax(-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class GatedFeedForward(nn.Module):
    """down(value * GELU(gate)); ffn.up's first half of rows is the value, the second the gate."""

    def __init__(self, config):
        super().__init__()
        inner = config.intermediate_size // 2
        self.up = nn.Linear(config.hidden_size, 2 * inner, bias=False)
        self.down = nn.Linear(inner, config.hidden_size, bias=False)

    def forward(self, x):
        value, gate = self.up(x).chunk(2, dim=-1)
        return self.down(value * F.gelu(gate))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.attn = Attention(config)
        self.ffn_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.ffn = GatedFeedForward(config)

    def forward(self, x, mask):
        x = x + self.attn(self.attn_norm(x), mask)
        return x + self.ffn(self.ffn_norm(x))


class CrammedForMaskedLM(PreTrainedModel):
    config_class = CrammedConfig
    base_model_prefix = "crammed"

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.final_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word

    def forward(self, input_ids, attention_mask=None, labels=None, **unused):
        x = self.embeddings(input_ids)
        mask = None
        if attention_mask is not None:
            # Padding keys get the most negative score, so softmax gives them nothing.
            blocked = (attention_mask == 0)[:, None, None, :]
            mask = torch.zeros(blocked.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(blocked, torch.finfo(x.dtype).min)
        for block in self.layers:
            x = block(x, mask)
        logits = F.linear(self.final_norm(x), self.embeddings.word.weight)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)
