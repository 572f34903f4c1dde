"""SASRec (Kang & McAuley 2018): a causal self-attention encoder over item-ID histories.

Item embeddings are shared between input and output; the score of an item is the dot product
of the last position's state with its embedding. Trained with full-softmax cross-entropy (or
BCE with one sampled negative) on the train split, early-stopped on valid NDCG@10, and the
best epoch's weights kept.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..config import SASRecConfig
from ...metrics import rank_metrics

log = logging.getLogger(__name__)


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, H)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    def __init__(self, n_items: int, max_len: int, hidden: int = 64, blocks: int = 2, heads: int = 1,
                 dropout: float = 0.3):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.item = nn.Embedding(n_items + 1, hidden, padding_idx=0)   # 0 = padding
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(hidden)
        nn.init.normal_(self.item.weight, std=hidden ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """States (B, T, H) of left-padded item-index sequences (0 = pad)."""
        B, T = seq.shape
        valid = seq > 0
        x = self.item(seq) * math.sqrt(self.item.embedding_dim) + self.pos(torch.arange(T, device=seq.device))
        x = self.drop(x) * valid[..., None]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=seq.device))
        # causal & real keys; the diagonal is always kept so no row is fully masked (padding rows).
        mask = (causal[None] & valid[:, None, :]) | torch.eye(T, dtype=torch.bool, device=seq.device)[None]
        for block in self.blocks:
            x = block(x, mask[:, None]) * valid[..., None]
        return self.norm(x)

    def item_logits(self, states: torch.Tensor) -> torch.Tensor:
        logits = states @ self.item.weight.T
        logits[..., 0] = float("-inf")
        return logits


@dataclass
class ItemIndex:
    items: list[str]                  # index i+1 <-> items[i]

    def __post_init__(self):
        self.index = {it: i + 1 for i, it in enumerate(self.items)}

    def encode(self, hist: list[str], max_len: int) -> list[int]:
        ids = [self.index[h] for h in hist][-max_len:]
        return [0] * (max_len - len(ids)) + ids


def _training_tensors(train: pd.DataFrame, idx: ItemIndex, cfg: SASRecConfig):
    inputs, labels = [], []
    for hist, target in zip(train["history"], train["target"]):
        seq = [idx.index[h] for h in hist][-cfg.max_len:] + [idx.index[target]]
        x, y = seq[:-1], seq[1:]
        if not cfg.all_positions:
            y = [0] * (len(y) - 1) + y[-1:]
        pad = cfg.max_len - len(x)
        inputs.append([0] * pad + x)
        labels.append([0] * pad + y)
    return torch.tensor(inputs, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


@torch.no_grad()
def rank(model: SASRec, histories: list[list[str]], idx: ItemIndex, max_len: int, top_k: int = 10,
         batch_size: int = 512, device: str = "cpu") -> list[list[str]]:
    """Top-k item ids for each history (full catalogue, history items not excluded)."""
    model.eval()
    out: list[list[str]] = []
    for start in range(0, len(histories), batch_size):
        seq = torch.tensor([idx.encode(h, max_len) for h in histories[start:start + batch_size]],
                           dtype=torch.long, device=device)
        logits = model.item_logits(model(seq)[:, -1])
        top = logits.topk(min(top_k, len(idx.items)), dim=-1).indices.cpu().numpy()
        out.extend([[idx.items[j - 1] for j in row] for row in top])
    return out


def train(cfg: SASRecConfig, train_df: pd.DataFrame, valid_df: pd.DataFrame, items: list[str],
          device: str = "cpu", progress: bool = True) -> tuple[SASRec, ItemIndex, dict]:
    """Train with early stopping on valid NDCG@10; returns (best model, item index, history)."""
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    idx = ItemIndex(list(items))
    x, y = _training_tensors(train_df, idx, cfg)
    model = SASRec(len(idx.items), cfg.max_len, cfg.hidden, cfg.blocks, cfg.heads, cfg.dropout).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    valid_hist, valid_tgt = list(valid_df["history"]), list(valid_df["target"])
    best, best_state, best_epoch, bad, history = -1.0, None, 0, 0, []
    bar = tqdm(range(1, cfg.max_epochs + 1), desc="sasrec", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x), cfg.batch_size):
            b = perm[start:start + cfg.batch_size]
            xb, yb = x[b].to(device), y[b].to(device)
            states = model(xb)
            keep = yb > 0
            if cfg.loss == "ce":
                logits = model.item_logits(states[keep])
                loss = F.cross_entropy(logits, yb[keep])
            else:
                neg = torch.randint(1, len(idx.items) + 1, yb.shape, device=device)
                h = states[keep]
                pos_l = (h * model.item(yb[keep])).sum(-1)
                neg_l = (h * model.item(neg[keep])).sum(-1)
                loss = F.binary_cross_entropy_with_logits(torch.cat([pos_l, neg_l]),
                                                          torch.cat([torch.ones_like(pos_l), torch.zeros_like(neg_l)]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        ranked = rank(model, valid_hist, idx, cfg.max_len, 10, device=device) if valid_hist else []
        m = rank_metrics(ranked, valid_tgt, ks=(10,)) if valid_hist else {"ndcg@10": 0.0, "recall@10": 0.0}
        history.append({"epoch": epoch, "loss": total / len(x), "valid_recall@10": m["recall@10"],
                        "valid_ndcg@10": m["ndcg@10"]})
        bar.set_postfix(loss=f"{total / len(x):.3f}", ndcg10=f"{m['ndcg@10']:.4f}")
        if m["ndcg@10"] > best:
            best, best_epoch, bad = m["ndcg@10"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    log.info("sasrec: best valid NDCG@10 %.4f at epoch %d of %d", best, best_epoch, len(history))
    return model, idx, {"best_epoch": best_epoch, "best_valid_ndcg@10": best, "epochs": history}
