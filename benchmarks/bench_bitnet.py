"""Decoding speed of a BitNet from its packed file against the fp32 latent model, on this CPU.

    python benchmarks/bench_bitnet.py [CHECKPOINT] [--threads 1] [--tokens 64] [--prompt 16]

Three models of one checkpoint (default: a random `tiny-tiny-stories`, vocab 192), each
decoding with its KV cache, one token per row per step after a prompt of `--prompt` tokens,
at batch 1 and batch 64:
- latent: the checkpoint as it trains, fp32 latent weights re-quantized on every forward;
- packed: `load_packed` of its base-3 file, int8 trits widened per product
  (`tinylm.export.bitnet_pack`);
- dequantized fp32: the quantized weights computed once and stored as fp32, a plain float
  model (the floor of what float GEMMs can do with these weights; 4 bytes a weight).
Prints tok/s of each, the packed / latent ratio, and the file sizes of the checkpoint and the
packed files. Decoding only: the prompt's prefill is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tinylm.export.bitnet_pack import export_packed, load_packed
from tinylm.models import build_model, get_family
from tinylm.models.bitnet import BitLinear, BitNet
from tinylm.tokenizers import ByteTokenizer
from tinylm.train.checkpoint import load_checkpoint, save_checkpoint


def random_checkpoint(folder: Path) -> Path:
    """A random tiny-tiny-stories checkpoint; a byte tokenizer stands in (vocab 192 ids)."""
    preset = get_family("bitnet").presets["tiny-tiny-stories"]
    config = {**preset.model, "vocab_size": 192}
    torch.manual_seed(0)
    model = build_model("bitnet", config)
    return save_checkpoint(folder / "ckpt", family="bitnet", model_config=config,
                           model_state=model.state_dict(), tokenizer=ByteTokenizer())


def dequantized(model: BitNet) -> BitNet:
    """The same function with the quantization done once: plain fp32 weights, quantized."""
    import copy

    plain = copy.deepcopy(model)
    for module in plain.modules():
        if isinstance(module, BitLinear):
            module.weight.data = module.quantized_weight().detach()
            module.forward = _plain_forward(module)
    return plain


def _plain_forward(module):
    import torch.nn.functional as F

    from tinylm.models.bitnet import quantize_activations

    def forward(x):
        if module.act_quant:
            ints, step = quantize_activations(x)
            x = ints * step
        return F.linear(x, module.weight)

    return forward


def tokens_per_second(model, batch: int, prompt: int, tokens: int, vocab: int) -> float:
    ids = torch.randint(0, vocab, (batch, prompt + tokens), generator=torch.Generator()
                        .manual_seed(0))
    with torch.inference_mode():
        cache = model.new_cache(batch, prompt + tokens)
        model(ids[:, :prompt], cache, 0)
        start = time.perf_counter()
        for pos in range(prompt, prompt + tokens):
            model(ids[:, pos:pos + 1], cache, pos)
        return batch * tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a bitnet checkpoint (default: random "
                        "tiny-tiny-stories)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64, help="decoded tokens per row")
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-bitnet-"))
    path = Path(args.checkpoint) if args.checkpoint else random_checkpoint(work)
    latent = load_checkpoint(path).build_model()
    files = {f"{packing} / {floats}": export_packed(path, work / f"{packing}-{floats}.tlm",
                                                    packing, floats)
             for packing, floats in (("2bit", "fp32"), ("base3", "fp16"))}
    models = {"latent fp32": latent, "packed base3": load_packed(files["base3 / fp16"]),
              "dequantized fp32": dequantized(latent)}
    vocab = latent.config.vocab_size
    print(f"checkpoint {path}: act_quant {latent.config.act_quant}, torch "
          f"{torch.__version__}, {args.threads} thread(s), {args.tokens} tokens after a "
          f"{args.prompt}-token prompt\n")
    print(f"{'model':18s} {'batch 1 tok/s':>14s} {'batch 64 tok/s':>15s}")
    speeds = {}
    for name, model in models.items():
        speeds[name] = [max(tokens_per_second(model, batch, args.prompt, args.tokens, vocab)
                            for _ in range(args.repeats)) for batch in (1, 64)]
        print(f"{name:18s} {speeds[name][0]:14,.0f} {speeds[name][1]:15,.0f}")
    ratio = [p / q for p, q in zip(speeds["packed base3"], speeds["latent fp32"])]
    floor = [p / q for p, q in zip(speeds["packed base3"], speeds["dequantized fp32"])]
    print(f"\npacked / latent: {ratio[0]:.2f}x at batch 1, {ratio[1]:.2f}x at batch 64")
    print(f"packed / dequantized fp32: {floor[0]:.2f}x at batch 1, {floor[1]:.2f}x at batch 64")
    print(f"\nfiles: checkpoint model.safetensors "
          f"{(path / 'model.safetensors').stat().st_size:,} bytes (fp32 latent)")
    for name, file in files.items():
        print(f"       packed {name}: {file.stat().st_size:,} bytes")
    if args.checkpoint:
        sample(latent, models["packed base3"], load_checkpoint(path).tokenizer)


def sample(latent, packed, tokenizer, prompt: str = "Once upon a time") -> None:
    """The same seeded continuation from the latent model and from the packed file."""
    from tinylm.infer.generate import generate_ids
    from tinylm.infer.sampling import SamplingConfig

    settings = SamplingConfig(temperature=0.8, top_k=40)
    for name, model in (("latent", latent), ("packed", packed)):
        ids = generate_ids(model, [tokenizer.encode(prompt)], 80, settings, seed=0,
                           eos_id=tokenizer.eos_id)[0]
        print(f"\n{name}: {prompt}{tokenizer.decode(ids)}")


if __name__ == "__main__":
    main()
