"""Byte Latent Transformer: the `blt` family (the BLT-LLM TinyStories card).

From Pagnoni et al. 2024, "Byte Latent Transformer: Patches Scale Better Than Tokens"
(arXiv:2412.09871), in the shape of the BLT-LLM TinyStories card
(docs/model-cards/blt-llm-tinystories-55m.txt); the reference implementation read for the
details is facebookresearch/blt (`bytelatent/model/blt.py`, `bytelatent/data/patcher.py`).
Tokenizer-free: the model reads bytes (tinylm's byte tokenizer: 256 bytes + EOS) and groups
them into variable-length patches chosen by a frozen entropy byte-LM (`blt_patching.py`).

    bytes --embed (byte + hash n-grams)--> local encoder (windowed-causal)      per byte
          --encoder cross-attention (queries: k per patch, max-pool seeds)--> patches
          --latent transformer (causal over patches)-->                         per patch
          --decoder cross-attention (byte i reads the patch *before* its own)-->
          local decoder (windowed-causal) --tied byte head--> next-byte logits  per byte

Notable choices:
- Causality. Byte i's patch is decided by bytes < i (see blt_patching). The latent input is
  [start vector, patch 0, ..., patch P-2], so latent output j has read patches < j only, and a
  byte of patch j reads latent output j: the previous patch, as the card says. Logit i thus
  depends on bytes <= i alone; tests/models/test_blt_noleak.py proves it (gradient,
  perturbation and generate-equals-forward checks) and shows it catches a planted leak.
- Every mask comes from patch ids: the encoder cross-attention lets patch p's k queries see
  the bytes whose id is p; the decoder gathers each byte's latent output by its id. A batch
  pads rows to its largest patch count; a padded patch (no bytes) attends every byte of its
  row so nothing is 0/0, and no real byte ever reads it.
- k = 3 (the reference's `cross_attn_k`): a patch is k vectors of the local width, so the
  encoder's output is k * 256 = 768 wide, the latent width, and the decoder splits a latent
  output back into k keys. With k * local_dim != latent_dim a linear map joins them.
- Local blocks are llama's `Block` with a windowed-causal `attention_fn`; RoPE
  (base 500000) in self-attention only; RMSNorm, SwiGLU, tied byte embedding and head.
- Hash n-gram embeddings (n = 3..8): the reference's rolling polynomial hash of the n bytes
  ending at each position, here mod 2^31 - 1 then mod the table size; positions before the
  text count as a 0 that no byte (ids 0..256, counted from 1) can be.
- Generation is incremental (`BLTCache`): per new byte the patcher runs one cached step, the
  encoder and decoder one cached step each (their window over cached keys), and the latent
  transformer one cached step when a patch completes; nothing is recomputed. A prompt is fed
  through the same steps. Rows of a batch complete patches at different bytes, so each row
  keeps its own latent cache.

Parameter counts (`tinylm info blt-55m`): the card gives 55.4M for the main model and 1.7M
for the patcher, with no breakdown. The stated shapes fix everything except the feed-forward
widths and the hash tables' size; with SwiGLU widths 2048 (latent) and 768 (local) and 5,120
rows per n-gram table the main model has 55,327,232 parameters (0.1% under the card); the
patcher, a 2-layer dim-256 llama with SwiGLU 768 and a 257-byte embedding, has 1,771,008
(4% over; a width of 704 would give 1.64M: the card's 1.7M is a rounded figure either way).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.models import blt_patching as patching
from tinylm.models.blt_patching import MODES, next_byte_entropy, patch_ids, patch_starts
from tinylm.models.common import KVCache, RMSNorm, init_linear_, residual_std, rope_tables
from tinylm.models.family import ExportSpec, Family, Preset
from tinylm.models.llama import Block, Llama, LlamaConfig

# %% export (copied into the single-file export; see export/single_file.py)

HASH_PRIME, HASH_MODULUS = 1_000_003, 2**31 - 1


@dataclass
class BLTConfig:
    vocab_size: int = 257          # bytes + EOS (tinylm's byte tokenizer)
    context_len: int = 512         # bytes
    local_dim: int = 256
    local_heads: int = 4
    local_ffn: int = 768
    encoder_layers: int = 1
    decoder_layers: int = 4
    window: int = 128              # windowed-causal self-attention of the local models
    latent_dim: int = 768
    latent_layers: int = 6
    latent_heads: int = 12
    latent_ffn: int = 2048
    cross_k: int = 3               # vectors per patch in the cross-attentions
    ngram_min: int = 3
    ngram_max: int = 8
    hash_vocab: int = 5120         # rows per n-gram table
    rope_base: float = 500000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # the frozen entropy patcher: a llama byte model of this shape
    patcher_dim: int = 256
    patcher_layers: int = 2
    patcher_heads: int = 4
    patcher_ffn: int = 768
    patch_mode: str = "global"     # global | monotonic (blt_patching)
    patch_threshold: float = 0.0   # theta in nats; 0 = fit to target_patch_len (first stage)
    target_patch_len: float = 4.4  # mean bytes per patch theta is fitted to
    patcher_checkpoint: str = ""   # a tinylm llama byte checkpoint to use; "" = train one
    patcher_steps: int = 300       # first-stage training steps when no checkpoint is given
    patcher_lr: float = 3e-3
    patcher_batch: int = 16

    def __post_init__(self):
        for name in ("vocab_size", "context_len", "local_dim", "local_heads", "local_ffn",
                     "encoder_layers", "decoder_layers", "window", "latent_dim",
                     "latent_layers", "latent_heads", "latent_ffn", "cross_k", "hash_vocab",
                     "patcher_dim", "patcher_layers", "patcher_heads", "patcher_ffn",
                     "patcher_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min}, "
                             f"{self.ngram_max}")
        for dim, heads in ((self.local_dim, self.local_heads),
                           (self.latent_dim, self.latent_heads)):
            if dim % heads or (dim // heads) % 2:
                raise ValueError(f"dim {dim} must split into {heads} heads of even width")
        if self.patch_mode not in MODES:
            raise ValueError(f"patch_mode must be one of {MODES}, got "
                             f"{self.patch_mode!r}")
        if self.patch_threshold < 0 or self.target_patch_len < 1:
            raise ValueError("patch_threshold must be >= 0 and target_patch_len >= 1")
        if self.patcher_steps < 0 or not 0 < self.patcher_lr < 1:
            raise ValueError("patcher_steps must be >= 0 and patcher_lr in (0, 1)")
        self.patcher_config()  # its own checks

    def patcher_config(self) -> LlamaConfig:
        return LlamaConfig(vocab_size=self.vocab_size, dim=self.patcher_dim,
                           n_layers=self.patcher_layers, n_heads=self.patcher_heads,
                           n_kv_heads=self.patcher_heads, ffn_hidden=self.patcher_ffn,
                           context_len=self.context_len, norm_eps=self.norm_eps)

    def local_config(self, layers: int) -> LlamaConfig:
        """The llama shape of a local encoder/decoder stack (its `Block`s are llama's)."""
        return LlamaConfig(vocab_size=self.vocab_size, dim=self.local_dim, n_layers=layers,
                           n_heads=self.local_heads, n_kv_heads=self.local_heads,
                           ffn_hidden=self.local_ffn, context_len=self.context_len,
                           rope_base=self.rope_base, norm_eps=self.norm_eps)

    def latent_config(self) -> LlamaConfig:
        return LlamaConfig(vocab_size=self.vocab_size, dim=self.latent_dim,
                           n_layers=self.latent_layers, n_heads=self.latent_heads,
                           n_kv_heads=self.latent_heads, ffn_hidden=self.latent_ffn,
                           context_len=self.context_len, rope_base=self.rope_base,
                           norm_eps=self.norm_eps)


# --------------------------------------------------------------------------- pieces

def windowed_attention(window: int):
    """An `attention_fn` for llama's attention: causal, each query sees its last `window` keys
    (itself included). q (B, H, T, D) sit at positions [pos, pos + T) of k, v (B, H, S, D)."""
    def attend(q, k, v, pos):
        rows = torch.arange(pos, pos + q.shape[2], device=q.device)[:, None]
        cols = torch.arange(k.shape[2], device=q.device)[None, :]
        mask = (cols <= rows) & (cols > rows - window)  # (T, S)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attend


class HashNgramEmbedding(nn.Module):
    """One table per n in [ngram_min, ngram_max], indexed by a hash of the n bytes ending at
    each position (BLT section 3.2.1, "hash n-gram embeddings")."""

    def __init__(self, config: BLTConfig):
        super().__init__()
        self.sizes = tuple(range(config.ngram_min, config.ngram_max + 1))
        self.rows = config.hash_vocab
        self.tables = nn.ModuleList(nn.Embedding(config.hash_vocab, config.local_dim)
                                    for _ in self.sizes)

    def hashes(self, idx: torch.Tensor, n: int) -> torch.Tensor:
        """(B, T) ids -> (B, T) table rows: a polynomial hash of bytes [i - n + 1, i]."""
        shifted = F.pad(idx + 1, (n - 1, 0))  # 0 = before the text
        value = torch.zeros_like(idx)
        for m in range(n):  # Horner over the window, oldest byte first
            value = (value * HASH_PRIME + shifted[:, m:m + idx.shape[1]]) % HASH_MODULUS
        return value % self.rows

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return sum(table(self.hashes(idx, n)) for n, table in zip(self.sizes, self.tables))


class EncoderCrossAttention(nn.Module):
    """Bytes -> patches: each patch's k queries, seeded by a max-pool of its bytes, attend the
    bytes of that patch only; output k * local_dim per patch (seed + attention, residual)."""

    def __init__(self, config: BLTConfig):
        super().__init__()
        d, self.k, self.heads = config.local_dim, config.cross_k, config.local_heads
        self.seed_norm, self.byte_norm = RMSNorm(d, config.norm_eps), RMSNorm(d, config.norm_eps)
        self.wq = nn.Linear(d, self.k * d, bias=False)  # one seed -> k distinct queries
        self.wkv = nn.Linear(d, 2 * d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, seeds, hidden, mask):
        """seeds (B, P, d), hidden (B, T, d), mask (B, P, T) bool -> (B, P, k * d)."""
        batch, patches, d = seeds.shape
        head = d // self.heads
        q = self.wq(self.seed_norm(seeds)).view(batch, patches * self.k, self.heads, head)
        key, value = self.wkv(self.byte_norm(hidden)).view(batch, -1, 2, self.heads, head) \
            .unbind(2)  # (B, T, H, hd) each
        mask = mask.repeat_interleave(self.k, dim=1)[:, None]  # (B, 1, P*k, T)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), key.transpose(1, 2),
                                             value.transpose(1, 2), attn_mask=mask)
        out = self.wo(out.transpose(1, 2).reshape(batch, patches, self.k, d))
        return (seeds[:, :, None] + out).reshape(batch, patches, self.k * d)


class DecoderCrossAttention(nn.Module):
    """Patches -> bytes: each byte's query attends the k vectors of one latent output (the
    one its patch id selects; see the module docstring for why it is the previous patch)."""

    def __init__(self, config: BLTConfig):
        super().__init__()
        d, self.k, self.heads = config.local_dim, config.cross_k, config.local_heads
        self.query_norm = RMSNorm(d, config.norm_eps)
        self.patch_norm = RMSNorm(d, config.norm_eps)
        self.wq = nn.Linear(d, d, bias=False)
        self.wkv = nn.Linear(d, 2 * d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def patch_keys(self, latent_out: torch.Tensor) -> torch.Tensor:
        """(B, P, k * d) -> keys and values (B, P, k, 2 * d) per patch, computed once a patch."""
        batch, patches, _ = latent_out.shape
        parts = latent_out.view(batch, patches, self.k, -1)
        return self.wkv(self.patch_norm(parts))

    def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """x (B, T, d), keys (B, T, k, 2d) (each byte's patch) -> (B, T, d)."""
        batch, length, d = x.shape
        head = d // self.heads
        q = self.wq(self.query_norm(x)).view(batch, length, self.heads, head)
        key, value = keys.view(batch, length, self.k, 2, self.heads, head).unbind(3)
        weights = torch.einsum("bthd,btkhd->bthk", q, key).mul(head ** -0.5).softmax(-1)
        out = torch.einsum("bthk,btkhd->bthd", weights, value)
        return self.wo(out.reshape(batch, length, d))


# --------------------------------------------------------------------------- the model

class BLTCache:
    """What generation keeps per sequence: bytes, entropies and patch ids so far, the
    patcher's, encoder's and decoder's keys and values, each row's latent cache, each
    completed patch's decoder keys and the start of each row's open patch."""

    def __init__(self, model: BLT, batch: int, max_len: int, device, dtype):
        c = model.config
        head = c.local_dim // c.local_heads
        self.max_len = max_len
        self.patcher = model.patcher.new_cache(batch, max_len, device, dtype)
        self.encoder = KVCache(c.encoder_layers, batch, c.local_heads, max_len, head, device,
                               dtype)
        self.decoder = KVCache(c.decoder_layers, batch, c.local_heads, max_len, head, device,
                               dtype)
        self.latent = [KVCache(c.latent_layers, 1, c.latent_heads, max_len,
                               c.latent_dim // c.latent_heads, device, dtype)
                       for _ in range(batch)]
        self.bytes = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.entropy = torch.zeros(batch, max_len, dtype=torch.float32, device=device)
        self.patch_id = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.hidden = torch.zeros(batch, max_len, c.local_dim, dtype=dtype, device=device)
        self.patch_keys = torch.zeros(batch, max_len, c.cross_k, 2 * c.local_dim, dtype=dtype,
                                      device=device)
        self.open_from = torch.zeros(batch, dtype=torch.long, device=device)


class BLT(nn.Module):
    family = "blt"

    def __init__(self, config: BLTConfig):
        super().__init__()
        self.config = c = config
        self.patcher = Llama(c.patcher_config()).requires_grad_(False)  # frozen, never trained
        # theta lives with the patcher's weights, so a checkpoint (and a resume) carries it;
        # until the first stage fits it, the card's value stands in
        self.patcher.register_buffer("threshold", torch.tensor(c.patch_threshold or 1.0917))
        self.byte_emb = nn.Embedding(c.vocab_size, c.local_dim)
        self.hash_emb = HashNgramEmbedding(c)
        self.encoder = nn.ModuleList(Block(c.local_config(c.encoder_layers))
                                     for _ in range(c.encoder_layers))
        self.encoder_cross = EncoderCrossAttention(c)
        wide = c.cross_k * c.local_dim
        self.to_latent = nn.Identity() if wide == c.latent_dim else \
            nn.Linear(wide, c.latent_dim, bias=False)
        self.latent_start = nn.Parameter(torch.zeros(c.latent_dim))
        self.latent = nn.ModuleList(Block(c.latent_config()) for _ in range(c.latent_layers))
        self.latent_norm = RMSNorm(c.latent_dim, c.norm_eps)
        self.from_latent = nn.Identity() if wide == c.latent_dim else \
            nn.Linear(c.latent_dim, wide, bias=False)
        self.decoder_cross = DecoderCrossAttention(c)
        self.decoder = nn.ModuleList(Block(c.local_config(c.decoder_layers))
                                     for _ in range(c.decoder_layers))
        self.norm = RMSNorm(c.local_dim, c.norm_eps)
        for block in [*self.encoder, *self.decoder]:
            block.attn.attention_fn = windowed_attention(c.window)
        for name, dim in (("local", c.local_dim // c.local_heads),
                          ("latent", c.latent_dim // c.latent_heads)):
            cos, sin = rope_tables(dim, c.context_len, c.rope_base)
            self.register_buffer(f"{name}_cos", cos, persistent=False)  # (context, head/2)
            self.register_buffer(f"{name}_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        std, c = self.config.init_std, self.config
        trained = [m for name, m in self.named_modules() if not name.startswith("patcher")]
        for module in trained:
            if isinstance(module, (nn.Linear, nn.Embedding)):
                init_linear_(module, std)
        for blocks, depth in ((self.encoder, c.encoder_layers + c.decoder_layers),
                              (self.decoder, c.encoder_layers + c.decoder_layers),
                              (self.latent, c.latent_layers)):
            for block in blocks:
                init_linear_(block.attn.wo, residual_std(std, depth))
                init_linear_(block.mlp.w2, residual_std(std, depth))
        nn.init.normal_(self.latent_start, mean=0.0, std=std)

    # ------------------------------------------------------------------ shared pieces

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) bytes -> (B, T, d): byte embedding plus hash n-gram embeddings."""
        return self.byte_emb(idx) + self.hash_emb(idx)

    def local(self, blocks, x, pos, cache=None):
        """Windowed-causal local blocks over bytes at positions [pos, pos + T)."""
        cos = self.local_cos[pos:pos + x.shape[1]]
        sin = self.local_sin[pos:pos + x.shape[1]]
        for i, block in enumerate(blocks):
            x = block(x, cos, sin, cache, i, pos)
        return x

    def latent_forward(self, z, pos, cache=None):
        """Causal latent blocks over patch vectors at patch positions [pos, pos + P)."""
        cos = self.latent_cos[pos:pos + z.shape[1]]
        sin = self.latent_sin[pos:pos + z.shape[1]]
        for i, block in enumerate(self.latent):
            z = block(z, cos, sin, cache, i, pos)
        return self.from_latent(self.latent_norm(z))

    def pool(self, hidden, ids, patches):
        """Patch vectors (B, P, latent_dim) of the bytes `hidden` (B, T, d) grouped by `ids`."""
        batch, length, d = hidden.shape
        index = ids[:, :, None].expand(batch, length, d)
        seeds = hidden.new_zeros(batch, patches, d).scatter_reduce(
            1, index, hidden, reduce="amax", include_self=False)  # max-pool seed per patch
        mask = ids[:, None, :] == torch.arange(patches, device=ids.device)[None, :, None]
        mask = mask | ~mask.any(-1, keepdim=True)  # a padded patch sees all: never 0/0
        return self.to_latent(self.encoder_cross(seeds, hidden, mask))

    def boundaries(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) bytes -> (B, T) patch ids, from the frozen patcher's entropies."""
        with torch.no_grad():
            entropy = next_byte_entropy(self.patcher(idx))
            starts = patch_starts(entropy, self.patcher.threshold,
                                           self.config.patch_mode)
        return patch_ids(starts)

    # ------------------------------------------------------------------ forward

    def forward(self, idx: torch.Tensor, cache: BLTCache | None = None, pos: int = 0,
                embedded: torch.Tensor | None = None):
        """idx (B, T) bytes at positions [pos, pos + T) -> logits (B, T, vocab). With a cache
        the bytes go through it one at a time (generation). `embedded` replaces the embedding
        of idx (the no-leak gate differentiates through it)."""
        length = idx.shape[1]
        if pos + length > self.config.context_len:
            raise ValueError(f"positions up to {pos + length} exceed the context length "
                             f"{self.config.context_len}")
        if cache is not None:
            steps = [self.step(idx[:, i], cache, pos + i) for i in range(length)]
            return torch.stack(steps, dim=1)
        ids = self.boundaries(idx)
        hidden = self.local(self.encoder, self.embed(idx) if embedded is None else embedded, 0)
        patches = int(ids.max()) + 1
        pooled = self.pool(hidden, ids, patches)  # (B, P, latent)
        start = self.latent_start.expand(idx.shape[0], 1, -1)
        latent_in = torch.cat([start, pooled[:, :-1]], dim=1)  # output j reads patches < j
        keys = self.decoder_cross.patch_keys(self.latent_forward(latent_in, 0))  # (B, P, k, 2d)
        per_byte = keys.gather(1, ids[:, :, None, None].expand(-1, -1, *keys.shape[2:]))
        return self.decode(hidden, per_byte, 0)

    def decode(self, hidden, keys, pos, cache=None):
        x = hidden + self.decoder_cross(hidden, keys)
        x = self.local(self.decoder, x, pos, cache)
        return self.norm(x) @ self.byte_emb.weight.t()  # tied head: (B, T, vocab)

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None):
        weight = self.byte_emb.weight
        return BLTCache(self, batch, max_len or self.config.context_len, device or weight.device,
                        dtype or weight.dtype)

    @torch.no_grad()
    def step(self, ids: torch.Tensor, cache: BLTCache, pos: int) -> torch.Tensor:
        """One new byte per row, ids (B,) at position pos -> logits (B, vocab), through the
        cache: what `forward` computes for that position, with nothing recomputed."""
        c, rows = cache, torch.arange(ids.shape[0], device=ids.device)
        if pos >= c.max_len:
            raise ValueError(f"BLT cache holds {c.max_len} positions, asked for {pos + 1}")
        c.bytes[:, pos] = ids
        # decided by the entropies of earlier positions through patch_starts itself (the
        # entry at pos, not computed yet, is never read)
        window = c.entropy[:, max(0, pos - 2):pos + 1]
        opens = patch_starts(window, self.patcher.threshold,
                                      self.config.patch_mode)[:, -1]
        c.patch_id[:, pos] = (c.patch_id[:, pos - 1] + opens.long()) if pos else 0
        logits = self.patcher(ids[:, None], c.patcher, pos)[:, -1]
        c.entropy[:, pos] = next_byte_entropy(logits)
        recent = c.bytes[:, max(0, pos - self.config.ngram_max + 1):pos + 1]
        hidden = self.local(self.encoder, self.embed(recent)[:, -1:], pos, c.encoder)
        c.hidden[:, pos] = hidden[:, 0]
        for row in rows[opens].tolist():
            self._advance_latent(c, row, pos)
        keys = c.patch_keys[rows, c.patch_id[:, pos]][:, None]  # (B, 1, k, 2d)
        return self.decode(hidden, keys, pos, c.decoder)[:, -1]

    def _advance_latent(self, c: BLTCache, row: int, pos: int) -> None:
        """Byte `pos` opens a patch in `row`: pool the patch it closes, one latent step."""
        patch = int(c.patch_id[row, pos])
        if patch == 0:
            z = self.latent_start[None, None]
        else:
            hidden = c.hidden[row:row + 1, int(c.open_from[row]):pos]  # (1, n, d)
            z = self.pool(hidden, torch.zeros(hidden.shape[:2], dtype=torch.long,
                                              device=hidden.device), 1)
        c.open_from[row] = pos
        out = self.latent_forward(z, patch, c.latent[row])
        c.patch_keys[row, patch] = self.decoder_cross.patch_keys(out)[0, 0]

    # ------------------------------------------------------------------ introspection

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameters by part, as the card describes the model (plus the frozen patcher)."""
        parts = {"encoder (byte embedding = tied head, 1 block)": 0, "hash n-gram embeddings": 0,
                 "encoder cross-attention (bytes -> patches)": 0, "latent transformer": 0,
                 "decoder cross-attention (patches -> bytes)": 0, "decoder": 0,
                 "patcher (frozen entropy byte-LM)": 0}
        for name, p in self.named_parameters():
            parts[part_of(name)] += p.numel()
        return parts
# %% end export


# --------------------------------------------------------------------------- the record

_PARTS = (("patcher.", "patcher (frozen entropy byte-LM)"),
          ("hash_emb.", "hash n-gram embeddings"),
          ("encoder_cross.", "encoder cross-attention (bytes -> patches)"),
          ("decoder_cross.", "decoder cross-attention (patches -> bytes)"),
          ("encoder.", "encoder (byte embedding = tied head, 1 block)"),
          ("byte_emb.", "encoder (byte embedding = tied head, 1 block)"),
          ("decoder.", "decoder"), ("norm.", "decoder"))


def part_of(name: str) -> str:
    for prefix, part in _PARTS:
        if name.startswith(prefix):
            return part
    return "latent transformer"  # latent blocks, start vector, norm, the joining maps


def parameter_group(name: str) -> str:
    if name.startswith("patcher."):
        return "patcher"
    if name.startswith(("byte_emb", "hash_emb", "latent_start")):
        return "embeddings"
    if "norm" in name:
        return "norms"
    if "_cross." in name or ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "other"


_BLOCK = re.compile(r"^(encoder|latent|decoder)\.(\d+)\.")


def depth_of(names, config: BLTConfig | None) -> dict[str, float]:
    """Encoder, latent and decoder blocks in data order, spread over [0, 1]; the patcher and
    embeddings sit outside the stack."""
    c = config or BLTConfig()
    offset = {"encoder": 0, "latent": c.encoder_layers,
              "decoder": c.encoder_layers + c.latent_layers}
    total = c.encoder_layers + c.latent_layers + c.decoder_layers
    found = {}
    for name in names:
        match = _BLOCK.match(name)
        if match:
            found[name] = (offset[match.group(1)] + int(match.group(2))) / max(1, total - 1)
    return found


def no_weight_decay(name: str, param) -> bool:
    """Embeddings (the byte table is also the head) and 1-D tensors do not decay, as llama."""
    return param.ndim < 2 or name.startswith(("byte_emb", "hash_emb"))


def prepare_training(model: BLT, train_tokens, config, seq_len: int, log=print) -> None:
    """The first stage of a fresh BLT run: give the model its patcher (train one on the run's
    training bytes, or load `patcher_checkpoint`), freeze it, fit theta, report patching."""
    c = model.config
    if c.patcher_checkpoint:
        _load_patcher(model, c.patcher_checkpoint)
        log(f"patcher: loaded {c.patcher_checkpoint}")
    else:
        log(f"patcher: training a {c.patcher_layers} x {c.patcher_dim} byte llama for "
            f"{c.patcher_steps} steps (first stage)")
        patching.train_patcher(model.patcher, train_tokens, c.patcher_steps, c.patcher_batch,
                               seq_len, c.patcher_lr, config.seed + 1, log)
    model.patcher.requires_grad_(False)
    entropy = patching.sample_entropy(model.patcher, train_tokens, seq_len, 32, config.seed + 2)
    theta = c.patch_threshold or patching.fit_threshold(entropy, c.target_patch_len,
                                                        c.patch_mode)
    model.patcher.threshold.fill_(theta)
    starts = patching.patch_starts(entropy, model.patcher.threshold, c.patch_mode)
    log(f"patcher: theta {theta:.4f} nats ({c.patch_mode}"
        f"{', fitted to ' + str(c.target_patch_len) + ' bytes/patch' if not c.patch_threshold else ''}"
        f"); {patching.format_statistics(patching.patch_statistics(starts))}")


def _load_patcher(model: BLT, path: str) -> None:
    from tinylm.errors import TinyLMError
    from tinylm.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    want = asdict(model.config.patcher_config())
    have = ckpt.meta["model_config"]
    if ckpt.meta["family"] != "llama" or ckpt.tokenizer.kind != "bytes":
        raise TinyLMError(f"patcher_checkpoint {path}: need a llama model with the bytes "
                          f"tokenizer, got {ckpt.meta['family']} with {ckpt.tokenizer.kind}")
    differ = sorted(k for k in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads",
                                "ffn_hidden") if have.get(k) != want[k])
    if differ or have.get("think_steps", 0) or not have.get("tie_embeddings", True):
        raise TinyLMError(f"patcher_checkpoint {path}: its shape differs from the config's "
                          f"patcher ({', '.join(differ) or 'thinking or untied head'})")
    with torch.no_grad():
        model.patcher.load_state_dict({**ckpt.model_state,
                                       "threshold": model.patcher.threshold.clone()})


def patcher_summary(model: BLT) -> dict:
    """The patcher's content hash, theta, mode, and patching of the built-in sample text."""
    state = {k: v for k, v in model.state_dict().items() if k.startswith("patcher.")}
    device = model.byte_emb.weight.device
    sample = torch.tensor([list(patching.SAMPLE_TEXT.encode())], device=device)
    with torch.no_grad():
        starts = model.boundaries(sample[:, :model.config.context_len]) \
            .diff(dim=1, prepend=torch.full_like(sample[:, :1], -1)) > 0
    return {"sha256": patching.state_sha256(state),
            "threshold": round(float(model.patcher.threshold), 6),
            "mode": model.config.patch_mode,
            "sample_text": patching.patch_statistics(starts)}


def describe_model(model: BLT) -> list[str]:
    summary = patcher_summary(model)
    parts = model.parameter_breakdown()
    patcher = parts["patcher (frozen entropy byte-LM)"]
    main = sum(parts.values()) - patcher
    stats = patching.format_statistics(summary["sample_text"])
    return [(f"patcher sha256 {summary['sha256'][:16]}, theta {summary['threshold']:g} nats "
             f"({summary['mode']}); a preset's patcher is untrained: a run's first stage "
             f"makes it"),
            f"patching of the sample text: {stats}",
            (f"main model {main:,} + patcher {patcher:,} parameters; the BLT-LLM card's "
             f"blt-55m states 55.4M + 1.7M: it gives no breakdown, and its unstated FFN widths "
             f"and hash-table size are chosen to match (see the blt module docstring)")]


PRESETS = {
    "blt-debug": Preset(
        "A tiny BLT for tests: local dim 16, latent 48, 1 + 1 local and 2 latent layers",
        model={"context_len": 64, "local_dim": 16, "local_heads": 2, "local_ffn": 32,
               "encoder_layers": 1, "decoder_layers": 1, "window": 16, "latent_dim": 48,
               "latent_layers": 2, "latent_heads": 2, "latent_ffn": 64, "cross_k": 3,
               "hash_vocab": 64, "patcher_dim": 16, "patcher_layers": 1, "patcher_heads": 2,
               "patcher_ffn": 32, "patcher_steps": 8, "target_patch_len": 3.0},
        train={"lr": 3e-3, "warmup_steps": 5, "batch_size": 4, "eval_batches": 2}),
    "blt-tiny": Preset(
        "A small BLT for CPU runs: local dim 64 (1 + 2 layers), latent dim 192 (2 layers), "
        "k 3, hash n-grams 3..8, a 2 x 64 entropy patcher trained as the first stage",
        model={"context_len": 256, "local_dim": 64, "local_heads": 4, "local_ffn": 192,
               "encoder_layers": 1, "decoder_layers": 2, "window": 64, "latent_dim": 192,
               "latent_layers": 2, "latent_heads": 4, "latent_ffn": 512, "cross_k": 3,
               "hash_vocab": 1024, "patcher_dim": 64, "patcher_layers": 2, "patcher_heads": 4,
               "patcher_ffn": 192, "patcher_steps": 150, "patcher_lr": 3e-3,
               "target_patch_len": 4.4},
        train={"lr": 3e-3, "warmup_steps": 30, "schedule": "cosine", "batch_size": 16,
               "weight_decay": 0.1, "grad_clip": 1.0, "beta1": 0.9, "beta2": 0.95,
               "eval_every": 100, "eval_batches": 4}),
    "blt-55m": Preset(
        "BLT-LLM TinyStories card: local dim 256 (1 encoder + 4 decoder layers, window 128), "
        "latent 6 x 768 (12 heads), k 3, hash n-grams 3..8, 2 x 256 entropy patcher, "
        "theta fitted to 4.4 bytes/patch, context 512",
        model={"context_len": 512, "patcher_steps": 2000},
        train={"lr": 4e-4, "warmup_steps": 300, "schedule": "cosine", "batch_size": 16,
               "grad_accum": 2, "steps": 20000, "weight_decay": 0.1, "grad_clip": 1.0,
               "beta1": 0.9, "beta2": 0.95, "seq_len": 512}),
}

FAMILY = Family(
    name="blt", config_class=BLTConfig, model_class=BLT, presets=PRESETS,
    groups=("embeddings", "norms", "attention", "mlp", "other", "patcher"),
    group_of=parameter_group, depth_of=depth_of, no_weight_decay=no_weight_decay,
    frozen_prefixes=("patcher.",), prepare_training=prepare_training,
    checkpoint_meta=lambda model: {"patcher": patcher_summary(model)},
    describe_model=describe_model,
    export=ExportSpec(sources=("tinylm.models.common", "tinylm.models.llama",
                               "tinylm.models.blt_patching", "tinylm.models.blt"),
                      model="BLT", config="BLTConfig",
                      notes="A BLT: the frozen entropy patcher's weights are part of the "
                            "weights (patcher.*), theta among them."))
