"""The same GPT in PyTorch, with the same parameter names, for parity tests and benchmarks."""
import torch
import torch.nn.functional as TF
import torch.utils.checkpoint
from torch import nn


class Attention(nn.Module):
    def __init__(self, d_model, n_heads, bias):
        super().__init__()
        self.n_heads = n_heads
        self.causal = True  # False: a bidirectional encoder (benchmarks/mlm_reference.py)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).contiguous().view(b, t, c))


class FeedForward(nn.Module):
    def __init__(self, d_model, bias):
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model, bias=bias)
        self.proj = nn.Linear(4 * d_model, d_model, bias=bias)

    def forward(self, x):
        return self.proj(TF.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, d_model, n_heads, bias, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.attn = Attention(d_model, n_heads, bias)
        self.norm2 = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.ff = FeedForward(d_model, bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class PosEmb(nn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.embedding = nn.Embedding(n, d)


class TorchGPT(nn.Module):
    """Pre-norm, learned positions, tanh-GELU, tied head: minigrad_lm's GPT default."""

    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = PosEmb(cfg.context_length, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg.d_model, cfg.n_head, cfg.bias, cfg.layer_norm_eps)
                                    for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight
        self.recompute_blocks = False  # torch.utils.checkpoint around each Block

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb.embedding(torch.arange(t, device=idx.device))
        for layer in self.layers:
            if self.recompute_blocks and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.head(self.ln_f(x))

    def loss(self, idx, targets):
        logits = self(idx)
        return TF.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def from_minigrad(model, dtype=torch.float32, device="cpu"):
    """A TorchGPT holding a copy of a minigrad_lm GPT's weights."""
    cfg = model.config
    if not (cfg.norm_first and cfg.positional == "learned" and cfg.tie_weights
            and cfg.activation == "gelu_tanh" and cfg.dropout == 0):
        raise ValueError("TorchGPT mirrors only the default GPT configuration")
    tm = TorchGPT(cfg).to(device=device, dtype=dtype)
    state = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in model.state_dict().items()}
    missing, unexpected = tm.load_state_dict(state, strict=False)
    assert missing == ["head.weight"] and not unexpected, (missing, unexpected)
    return tm

