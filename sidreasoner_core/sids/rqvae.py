"""Residual-quantised VAE over item embeddings (paper §3.2.1), in plain torch.

x -> MLP encoder -> z; level l quantises the residual r_l (r_0 = z) to its nearest code e_l,
r_{l+1} = r_l - e_l; the decoder reconstructs x from sum_l e_l (straight-through gradient).
Loss = MSE(x_hat, x) + sum_l ||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2.
Each codebook starts as k-means of its level's residuals on the first batch.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class RQVAEShape:
    input_dim: int
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    latent_dim: int = 32
    levels: int = 3
    codes_per_level: int = 256
    beta: float = 0.25
    dropout: float = 0.0


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:  # no activation on the output layer
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def sq_dists(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (rows of x) x (rows of codes), without the N x K x d intermediate."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * (x @ codes.T) + (codes * codes).sum(1)[None, :]
    return d.clamp_min_(0.0)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations; copes with fewer (or identical) points than k."""
    n = len(x)
    if n < k:  # too few points: repeat them with a little noise so every code is distinct
        idx = torch.randint(n, (k,), generator=generator)
        scale = x.std().clamp_min(1e-3) * 1e-2
        return x[idx] + scale * torch.randn(k, x.shape[1], generator=generator)
    first = torch.randint(n, (1,), generator=generator)
    centers = [x[first]]
    d2 = sq_dists(x, centers[0]).squeeze(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # all remaining points coincide with a center: pick uniformly
            nxt = torch.randint(n, (1,), generator=generator)
        else:
            nxt = torch.multinomial(d2 / total, 1, generator=generator)
        centers.append(x[nxt])
        d2 = torch.minimum(d2, sq_dists(x, centers[-1]).squeeze(1))
    c = torch.cat(centers)
    for _ in range(iters):
        assign = sq_dists(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled, None]  # empty clusters keep their seed
    return c


class RQVAE(nn.Module):
    def __init__(self, shape: RQVAEShape):
        super().__init__()
        self.shape = shape
        dims = [shape.input_dim, *shape.hidden_dims, shape.latent_dim]
        self.encoder = _mlp(dims, shape.dropout)
        self.decoder = _mlp(dims[::-1], shape.dropout)
        self.codebooks = nn.Parameter(torch.randn(shape.levels, shape.codes_per_level, shape.latent_dim) * 0.01)
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        """k-means of each level's residuals of `x` (the first batch)."""
        r = self.encoder(x)
        for level in range(self.shape.levels):
            c = kmeans(r, self.shape.codes_per_level, iters, generator)
            self.codebooks.data[level] = c
            r = r - c[sq_dists(r, c).argmin(1)]
        self.initialized.fill_(True)

    def quantize(self, z: torch.Tensor):
        """(z_q with straight-through gradient, codes N x L, quantisation loss)."""
        r, zq, qloss, codes = z, torch.zeros_like(z), z.new_zeros(()), []
        for level in range(self.shape.levels):
            book = self.codebooks[level]
            idx = sq_dists(r.detach(), book.detach()).argmin(1)
            e = book[idx]
            # codebook term pulls e_l to the residual; the beta term commits the encoder to its codes
            qloss = qloss + ((r.detach() - e) ** 2).mean() + self.shape.beta * ((r - e.detach()) ** 2).mean()
            zq = zq + e
            r = r - e.detach()
            codes.append(idx)
        zq_st = z + (zq - z).detach()
        return zq_st, torch.stack(codes, 1), qloss

    def forward(self, x: torch.Tensor):
        z = self.encoder(x)
        zq, codes, qloss = self.quantize(z)
        return self.decoder(zq), codes, qloss

    @torch.no_grad()
    def residuals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input residual of every level for a batch."""
        r, out = self.encoder(x), []
        for level in range(self.shape.levels):
            out.append(r)
            book = self.codebooks[level]
            r = r - book[sq_dists(r, book).argmin(1)]
        return out

    @torch.no_grad()
    def reset_dead(self, used: torch.Tensor, x: torch.Tensor, generator: torch.Generator, opt=None) -> int:
        """Move codes no item used (used: L x K bool) onto random residuals of batch `x`; returns how many."""
        n_reset = 0
        res = self.residuals(x)
        for level in range(self.shape.levels):
            dead = torch.nonzero(~used[level]).flatten()
            if not len(dead):
                continue
            pick = torch.randint(len(x), (len(dead),), generator=generator)
            self.codebooks.data[level, dead] = res[level][pick]
            state = opt.state.get(self.codebooks) if opt is not None else None
            if state:  # forget the stale moments of the moved codes
                state["exp_avg"][level, dead] = 0
                state["exp_avg_sq"][level, dead] = 0
            n_reset += len(dead)
        return n_reset

    @torch.no_grad()
    def assign(self, x: np.ndarray | torch.Tensor, chunk: int = 65536, progress: bool = False):
        """Codes (N x L int64), the last level's input residuals (N x d) and each row's distance to its
        assigned last-level code, computed chunk by chunk so memory stays O(chunk x K)."""
        self.eval()
        n, levels = len(x), self.shape.levels
        codes = np.empty((n, levels), dtype=np.int64)
        last_r = np.empty((n, self.shape.latent_dim), dtype=np.float32)
        last_d = np.empty(n, dtype=np.float32)
        books = self.codebooks.detach()
        for s in tqdm(range(0, n, chunk), desc="assign codes", disable=not progress, leave=False):
            xb = torch.as_tensor(np.asarray(x[s:s + chunk], dtype=np.float32))
            r = self.encoder(xb)
            for level in range(levels):
                d = sq_dists(r, books[level])
                best, idx = d.min(1)
                codes[s:s + len(xb), level] = idx.numpy()
                if level == levels - 1:
                    last_r[s:s + len(xb)] = r.numpy()
                    last_d[s:s + len(xb)] = best.numpy()
                r = r - books[level][idx]
        return codes, last_r, last_d

    @torch.no_grad()
    def losses(self, x: np.ndarray, chunk: int = 65536) -> dict[str, float]:
        """Mean reconstruction MSE and quantisation loss over all rows (eval mode)."""
        self.eval()
        recon = quant = 0.0
        for s in range(0, len(x), chunk):
            xb = torch.as_tensor(np.asarray(x[s:s + chunk], dtype=np.float32))
            out, _, q = self(xb)
            recon += float(((out - xb) ** 2).mean()) * len(xb)
            quant += float(q) * len(xb)
        return {"recon_loss": recon / len(x), "quant_loss": quant / len(x)}

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        torch.save({"shape": asdict(self.shape), "state_dict": self.state_dict(), **(extra or {})}, path)

    @classmethod
    def load(cls, path: str | Path) -> "RQVAE":
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(RQVAEShape(**blob["shape"]))
        model.load_state_dict(blob["state_dict"])
        return model


def train_rqvae(emb: np.ndarray, shape: RQVAEShape, epochs: int, batch_size: int, lr: float,
                weight_decay: float, kmeans_iters: int, seed: int, device: str = "cpu",
                progress: bool = True, reset_dead_codes: bool = True) -> tuple[RQVAE, list[dict]]:
    """Train from a fixed seed; returns the model (on CPU) and per-epoch mean losses."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = RQVAE(shape)
    x = torch.as_tensor(emb, dtype=torch.float32)
    n = len(x)
    order = torch.randperm(n, generator=gen)
    model.init_codebooks(x[order[:batch_size]], kmeans_iters, gen)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    bar = tqdm(range(epochs), desc="rq-vae", disable=not progress)
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=gen)
        tot = {"loss": 0.0, "recon": 0.0, "quant": 0.0}
        used = torch.zeros(shape.levels, shape.codes_per_level, dtype=torch.bool, device=device)
        for s in range(0, n, batch_size):
            xb = x[perm[s:s + batch_size]].to(device)
            out, codes, qloss = model(xb)
            used.scatter_(1, codes.T, True)
            recon = ((out - xb) ** 2).mean()
            loss = recon + qloss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            w = len(xb) / n
            tot["loss"] += float(loss.detach()) * w
            tot["recon"] += float(recon.detach()) * w
            tot["quant"] += float(qloss.detach()) * w
        # dead codes (unused for a whole epoch) restart on live residuals, so codebooks cannot collapse
        tot["dead_codes"] = model.reset_dead(used, xb, gen, opt) if reset_dead_codes else int((~used).sum())
        history.append({"epoch": epoch, **tot})
        bar.set_postfix(loss=f"{tot['loss']:.4f}", recon=f"{tot['recon']:.5f}")
    return model.cpu().eval(), history
