"""Function-preserving alignment of one checkpoint to another, before merging.

Two networks trained from different seeds compute similar functions with their hidden units in
a different order (and with different signs). Averaging them unit by unit then mixes unrelated
units. Git Re-Basin (Ainsworth et al. 2023; samuela/git-re-basin `src/weight_matching.py`)
permutes one model's units to match the other's by *weight matching*: for each permutation,
maximise the summed inner product of the weights it moves, a linear assignment problem. Models
that share an init or a run generally need none of this.

The symmetries used here, per layer; each leaves the network's function unchanged:

- SwiGLU hidden units: permute gate row i, up row i and w2 column i together.
- SwiGLU signs: flip up row i and w2 column i together. silu is not odd, so the gate row cannot
  be flipped. (There is also a positive scaling up*c, w2/c; weight matching does not undo it.)
- Attention heads, with GQA: permute kv heads (their k and v rows) together with their groups
  of query heads; permute query heads within a group; wo columns follow the query heads.
- Value dims within a kv head: permute or flip v row j together with wo column j of *every*
  query head in the group, since they all read the same value vector.
- RoPE pairs (half-split layout: dims d and d + head_dim/2 rotate together): flipping both dims
  of a pair is the rotation by pi, which commutes with RoPE; doing it on the key head and on all
  query heads of its group together leaves every q.k unchanged. (The full symmetry is any
  rotation in each pair's plane, plus q*c, k/c; we only use the discrete flip.)

Unlike Git Re-Basin, no coordinate descent is needed: the residual stream basis is *not*
permuted (RMSNorm gains would allow it, but we keep it simple), so every layer's unknowns touch
only that layer, and each layer is solved independently:

1. MLP: score(i, j) = gate_i.gate_j + |up_i.up_j + w2_i.w2_j|; the absolute value is the best
   sign. One `linear_sum_assignment(maximize=True)` gives the permutation; signs follow.
2. Attention: a query-head score sums |per-pair q dot| (best RoPE-pair sign each) and the
   nuclear norm of wo_A,i^T wo_B,k (best orthogonal mixing of value dims, a bound on the best
   signed permutation); a kv-head score adds the same for k and v plus the best query matching
   within the two groups. Assignment on kv heads, then on the query heads of each matched group.
3. With heads fixed, each sign appears linearly in the objective, so its best value is the sign
   of its summed inner products; value-dim permutations are one more assignment per kv head.

Which tensors form a block, and the attention and MLP shapes, come from the family record's
`align` (an `AlignSpec`: block prefixes whose children are llama's `attn.wqkv`, `attn.wo`,
`mlp.w13`, `mlp.w2`); a family without one cannot be aligned. Functions take that spec, or a
model config whose family has one.

Conventions: permutations gather, `new[i] = old[perm[i]]`, and signs are indexed by the *new*
position. Similarities are computed in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from tinylm.errors import TinyLMError
from tinylm.merge.slerp import check_compatible
from tinylm.models.family import AlignSpec

StateDict = Mapping[str, torch.Tensor]


@dataclass
class LayerPerms:
    """Permutations of one layer (gather convention, indexed by new position)."""

    mlp: torch.Tensor  # (hidden,) SwiGLU unit i <- old unit mlp[i]
    kv: torch.Tensor   # (n_kv,) kv head n <- old kv head kv[n]
    q: torch.Tensor    # (n_kv, group) query slot r of group n <- old slot q[n, r] of group kv[n]
    v: torch.Tensor    # (n_kv, head_dim) value dim j of kv head n <- old dim v[n, j]


@dataclass
class LayerSigns:
    """Sign flips of one layer (+1/-1, indexed by new position)."""

    mlp: torch.Tensor   # (hidden,) up row and w2 column
    rope: torch.Tensor  # (n_kv, head_dim // 2) RoPE pair of the kv head and its query heads
    v: torch.Tensor     # (n_kv, head_dim) v row and the wo columns of the group's query heads


def align_spec(config) -> AlignSpec:
    """`config` itself if it is an AlignSpec, else its family record's spec for it."""
    if isinstance(config, AlignSpec):
        return config
    from tinylm.models import family_of_config

    record = family_of_config(config)
    if record.align is None:
        raise TinyLMError(f"the {record.name} family declares no alignment spec; it cannot be "
                          f"aligned")
    return record.align(config)


def _shape(spec: AlignSpec) -> tuple[int, int, int, int, int]:
    """(n_heads, n_kv_heads, group size, head_dim, ffn_hidden)."""
    return (spec.n_heads, spec.n_kv_heads, spec.n_heads // spec.n_kv_heads,
            spec.head_dim, spec.ffn_hidden)


def _names(spec: AlignSpec, i: int) -> tuple[str, str, str, str]:
    """wqkv, wo, w13 and w2 of block i."""
    block = spec.blocks[i]
    return (f"{block}.attn.wqkv.weight", f"{block}.attn.wo.weight", f"{block}.mlp.w13.weight",
            f"{block}.mlp.w2.weight")


# --------------------------------------------------------------------------- transforms

def identity_transform(config) -> tuple[list[LayerPerms], list[LayerSigns]]:
    """The do-nothing transform, one entry per layer."""
    spec = align_spec(config)
    _, n_kv, group, head_dim, hidden = _shape(spec)
    perms = [LayerPerms(torch.arange(hidden), torch.arange(n_kv),
                        torch.arange(group).repeat(n_kv, 1), torch.arange(head_dim).repeat(n_kv, 1))
             for _ in range(spec.n_layers)]
    signs = [LayerSigns(torch.ones(hidden), torch.ones(n_kv, head_dim // 2),
                        torch.ones(n_kv, head_dim)) for _ in range(spec.n_layers)]
    return perms, signs


def random_transform(config, generator: torch.Generator | None = None,
                     ) -> tuple[list[LayerPerms], list[LayerSigns]]:
    """A random element of the symmetry group above, for tests and demonstrations."""
    spec = align_spec(config)
    _, n_kv, group, head_dim, hidden = _shape(spec)

    def perm(*shape):
        return torch.rand(*shape, generator=generator).argsort(dim=-1)

    def sign(*shape):
        return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1

    perms = [LayerPerms(perm(hidden), perm(n_kv), perm(n_kv, group), perm(n_kv, head_dim))
             for _ in range(spec.n_layers)]
    signs = [LayerSigns(sign(hidden), sign(n_kv, head_dim // 2), sign(n_kv, head_dim))
             for _ in range(spec.n_layers)]
    return perms, signs


def invert_transform(perms: Sequence[LayerPerms], signs: Sequence[LayerSigns],
                     ) -> tuple[list[LayerPerms], list[LayerSigns]]:
    """The transform that undoes (perms, signs): permute_model(permute_model(sd, T), T^-1) = sd."""
    inv_perms, inv_signs = [], []
    for p, s in zip(perms, signs):
        kv = p.kv.argsort()
        mlp, q, v = p.mlp.argsort(), p.q[kv].argsort(dim=-1), p.v[kv].argsort(dim=-1)
        inv_perms.append(LayerPerms(mlp, kv, q, v))
        inv_signs.append(LayerSigns(s.mlp[mlp], s.rope[kv], s.v[kv].gather(1, v)))
    return inv_perms, inv_signs


def _attention_index(spec: AlignSpec, p: LayerPerms, s: LayerSigns):
    """Row gather/sign of wqkv and column gather/sign of wo for one layer."""
    n_heads, n_kv, group, head_dim, _ = _shape(spec)
    dims = torch.arange(head_dim)
    old_q_head = (p.kv[:, None] * group + p.q).reshape(-1)                  # (n_heads,)
    q_rows = (old_q_head[:, None] * head_dim + dims).reshape(-1)
    k_rows = n_heads * head_dim + (p.kv[:, None] * head_dim + dims).reshape(-1)
    v_rows = (n_heads + n_kv) * head_dim + (p.kv[:, None] * head_dim + p.v).reshape(-1)
    rope = torch.cat([s.rope, s.rope], dim=1)                               # (n_kv, head_dim)
    rows = torch.cat([q_rows, k_rows, v_rows])
    row_sign = torch.cat([rope.repeat_interleave(group, 0).reshape(-1), rope.reshape(-1),
                          s.v.reshape(-1)])
    cols = (old_q_head[:, None] * head_dim + p.v.repeat_interleave(group, 0)).reshape(-1)
    col_sign = s.v.repeat_interleave(group, 0).reshape(-1)
    return rows, row_sign, cols, col_sign


def permute_model(state_dict: StateDict, config, perms: Sequence[LayerPerms],
                  signs: Sequence[LayerSigns] | None = None) -> dict[str, torch.Tensor]:
    """Apply a symmetry transform to a state dict; returns a new dict.

    Only each block's `attn.wqkv`, `attn.wo`, `mlp.w13` and `mlp.w2` change; embeddings and
    norms are untouched because the residual stream is not permuted.
    """
    spec = align_spec(config)
    if signs is None:
        signs = identity_transform(spec)[1]
    if len(perms) != spec.n_layers or len(signs) != spec.n_layers:
        raise TinyLMError(f"need one transform per layer ({spec.n_layers}), got "
                          f"{len(perms)} perms and {len(signs)} signs")
    hidden = spec.ffn_hidden
    out = dict(state_dict)
    for i, (p, s) in enumerate(zip(perms, signs)):
        wqkv, wo, w13, w2 = _names(spec, i)
        rows, row_sign, cols, col_sign = _attention_index(spec, p, s)
        out[wqkv] = state_dict[wqkv][rows] * row_sign.to(state_dict[wqkv].dtype)[:, None]
        out[wo] = state_dict[wo][:, cols] * col_sign.to(state_dict[wo].dtype)
        mlp_rows = torch.cat([p.mlp, hidden + p.mlp])
        mlp_sign = torch.cat([torch.ones(hidden), s.mlp]).to(state_dict[w13].dtype)
        out[w13] = state_dict[w13][mlp_rows] * mlp_sign[:, None]
        out[w2] = state_dict[w2][:, p.mlp] * s.mlp.to(state_dict[w2].dtype)
    return out


# --------------------------------------------------------------------------- matching

def _assign(score: torch.Tensor) -> torch.Tensor:
    """Column chosen for each row by a maximum-weight assignment (rows are the reference)."""
    rows, cols = linear_sum_assignment(score.cpu().numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)[torch.as_tensor(rows).argsort()]


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0)


def _match_mlp(a: StateDict, b: StateDict, spec: AlignSpec, i: int):
    hidden = spec.ffn_hidden
    _, _, w13, w2 = _names(spec, i)
    gate_a, up_a = a[w13].double().split(hidden)
    gate_b, up_b = b[w13].double().split(hidden)
    down_a, down_b = a[w2].double(), b[w2].double()                       # (dim, hidden)
    signed = up_a @ up_b.T + down_a.T @ down_b                             # (hidden, hidden)
    perm = _assign(gate_a @ gate_b.T + signed.abs())
    return perm, _sign(signed[torch.arange(hidden), perm])


def _heads(sd: StateDict, spec: AlignSpec, i: int):
    """q (H, D, dim), k and v (Hkv, D, dim), wo per head (H, dim, D), all float64."""
    n_heads, n_kv, _, head_dim, _ = _shape(spec)
    wqkv, wo, _, _ = _names(spec, i)
    q, k, v = sd[wqkv].double().split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim])
    dim = q.shape[-1]
    wo_heads = sd[wo].double().reshape(dim, n_heads, head_dim).transpose(0, 1)
    return (q.reshape(n_heads, head_dim, dim), k.reshape(n_kv, head_dim, dim),
            v.reshape(n_kv, head_dim, dim), wo_heads)


def _pair_dots(x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """(A heads, B heads, head_dim/2): q.k-style dot per RoPE pair (dims d and d + D/2)."""
    dots = torch.einsum("idx,kdx->ikd", x_a, x_b)
    half = dots.shape[-1] // 2
    return dots[..., :half] + dots[..., half:]


def _value_score(m: torch.Tensor, value_perms: bool) -> torch.Tensor:
    """Best value-dim agreement of (..., D, D) cross products: nuclear norm if value dims may be
    permuted (a bound over signed permutations), else the diagonal with the best signs."""
    if value_perms:
        return torch.linalg.svdvals(m).sum(-1)
    return m.diagonal(dim1=-2, dim2=-1).abs().sum(-1)


def _match_attention(a: StateDict, b: StateDict, spec: AlignSpec, i: int, value_perms: bool):
    _, n_kv, group, head_dim, _ = _shape(spec)
    q_a, k_a, v_a, wo_a = _heads(a, spec, i)
    q_b, k_b, v_b, wo_b = _heads(b, spec, i)
    q_pairs, k_pairs = _pair_dots(q_a, q_b), _pair_dots(k_a, k_b)
    wo_cross = torch.einsum("ixj,kxl->ikjl", wo_a, wo_b)                  # (H, H, D, D)
    v_cross = torch.einsum("ajx,blx->abjl", v_a, v_b)                     # (Hkv, Hkv, D, D)
    q_score = q_pairs.abs().sum(-1) + _value_score(wo_cross, value_perms)  # (H, H)
    kv_score = k_pairs.abs().sum(-1) + _value_score(v_cross, value_perms)  # (Hkv, Hkv)
    inner = {}
    for ga in range(n_kv):
        for gb in range(n_kv):
            block = q_score[ga * group:(ga + 1) * group, gb * group:(gb + 1) * group]
            inner[ga, gb] = _assign(block)
            kv_score[ga, gb] += block[torch.arange(group), inner[ga, gb]].sum()
    kv = _assign(kv_score)
    q = torch.stack([inner[n, int(kv[n])] for n in range(n_kv)])             # (Hkv, group)

    rope_sign = torch.empty(n_kv, head_dim // 2, dtype=torch.float64)
    v_perm = torch.empty(n_kv, head_dim, dtype=torch.long)
    v_sign = torch.empty(n_kv, head_dim, dtype=torch.float64)
    for n in range(n_kv):
        heads_a = torch.arange(n * group, (n + 1) * group)
        heads_b = int(kv[n]) * group + q[n]
        rope_sign[n] = _sign(k_pairs[n, kv[n]] + q_pairs[heads_a, heads_b].sum(0))
        cross = v_cross[n, kv[n]] + wo_cross[heads_a, heads_b].sum(0)      # (D, D): A dim, B dim
        v_perm[n] = _assign(cross.abs()) if value_perms else torch.arange(head_dim)
        v_sign[n] = _sign(cross[torch.arange(head_dim), v_perm[n]])
    return kv, q, v_perm, rope_sign, v_sign


def align_to(reference_sd: StateDict, other_sd: StateDict, config, value_perms: bool = True,
             return_transform: bool = False):
    """Transform `other_sd` by the symmetries above to best match `reference_sd`.

    The result computes the same function as `other_sd`. With `return_transform`, also returns
    the (perms, signs) applied, so `permute_model(other_sd, config, perms, signs)` is the result.
    """
    check_compatible(reference_sd, other_sd)
    spec = align_spec(config)
    perms, signs = [], []
    for i in range(spec.n_layers):
        mlp_perm, mlp_sign = _match_mlp(reference_sd, other_sd, spec, i)
        kv, q, v_perm, rope_sign, v_sign = _match_attention(reference_sd, other_sd, spec, i,
                                                             value_perms)
        perms.append(LayerPerms(mlp_perm, kv, q, v_perm))
        signs.append(LayerSigns(mlp_sign, rope_sign, v_sign))
    aligned = permute_model(other_sd, spec, perms, signs)
    return (aligned, perms, signs) if return_transform else aligned
