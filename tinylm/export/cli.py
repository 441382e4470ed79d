"""`tinylm export ...` subcommands (registered into the main parser by `tinylm.cli`)."""

from __future__ import annotations

from tinylm.errors import TinyLMError


def cmd_export_single_file(args) -> None:
    from pathlib import Path

    from tinylm.export.single_file import export_single_file
    from tinylm.io import check_output

    check_output(args.out, "file", inputs=[args.checkpoint], force=args.force)
    if args.weights_beside:
        check_output(Path(args.out).with_suffix(".safetensors"), "file",
                     inputs=[args.checkpoint], force=args.force)
    out = export_single_file(args.checkpoint, args.out,
                             weights="beside" if args.weights_beside else "embed",
                             check=not args.no_check)
    size = out.stat().st_size
    side = out.with_suffix(".safetensors")
    extra = f" + {side} ({side.stat().st_size / 1e3:,.1f} KB)" if args.weights_beside else ""
    checked = "" if args.no_check else ", checked against tinylm"
    print(f"wrote {out} ({size / 1e3:,.1f} KB){extra}{checked}; needs only torch. Try:\n"
          f"  python {Path(out)} --prompt \"Once upon a time\" -n 100")


def cmd_export_bitnet(args) -> None:
    from tinylm.export.bitnet_pack import export_packed, load_packed
    from tinylm.io import check_output

    check_output(args.out, "file", inputs=[args.checkpoint], force=args.force)
    out = export_packed(args.checkpoint, args.out, args.packing, args.embeddings)
    load_packed(out)  # refuses at once if what was written cannot be read back
    print(f"wrote {out} ({out.stat().st_size:,} bytes; ternary weights {args.packing}, "
          f"embeddings and norms {args.embeddings})")


def cmd_export_c(args) -> None:
    from pathlib import Path

    from tinylm.errors import TinyLMError
    from tinylm.export.c_engine import export_c, output_paths
    from tinylm.io import check_output

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TinyLMError(f"output {out} is a file; the C export writes a folder")
    for path in output_paths(out, args.freestanding):
        check_output(path, "file", inputs=[args.checkpoint], force=args.force)
    written = export_c(args.checkpoint, out, freestanding=args.freestanding,
                       fixed=args.fixed_point, prompt=args.prompt, max_new=args.max_new)
    extra = ""
    if args.freestanding:
        extra = (f", model_data.h ({'Q16.16' if args.fixed_point else 'float32'}; static "
                 f"buffers {written['static_buffers']:,} bytes)")
    print(f"wrote {out}/: run.c, model.bin ({written['model.bin']:,} bytes), tokenizer.bin"
          f"{extra}. Try:\n  cd {out} && cc -O2 -std=c99 -o run run.c -lm && "
          f"./run model.bin tokenizer.bin --prompt \"Once upon a time\" -n 100")


def cmd_export_hf(args) -> None:
    from tinylm.export.hf import check_hf_output, export_hf, push_to_hub

    if args.dry_run and not args.push_to_hub:
        raise TinyLMError("--dry-run goes with --push-to-hub REPO")
    if args.push_to_hub is not None and args.push_to_hub.count("/") != 1:
        raise TinyLMError(f"--push-to-hub takes a repo id OWNER/NAME, got {args.push_to_hub!r}")
    check_hf_output(args.out, inputs=[args.checkpoint], force=args.force)
    done = export_hf(args.checkpoint, args.out, check=not args.no_check)
    checked = "" if done["max_abs_diff"] is None else \
        f"; transformers' logits within {done['max_abs_diff']:.1e} of tinylm's"
    print(f"wrote {done['out']} ({done['tensors']} tensors, {done['family']} as "
          f"LlamaForCausalLM{checked})")
    if args.push_to_hub:
        print("\n".join(push_to_hub(done["out"], args.push_to_hub, args.dry_run)))


def cmd_export_gguf(args) -> None:
    from tinylm.export.gguf import export_gguf
    from tinylm.io import check_output

    check_output(args.out, "file", inputs=[args.checkpoint], force=args.force)
    done = export_gguf(args.checkpoint, args.out, args.dtype)
    print(f"wrote {done['out']} ({done['out'].stat().st_size:,} bytes; {done['tensors']} "
          f"tensors {args.dtype}, tokenizer {done['tokenizer']})")


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="ship a checkpoint outside tinylm")
    sub = p.add_subparsers(dest="export_command", required=True)
    s = sub.add_parser("single-file", help="one self-contained Python file (model, weights, "
                       "tokenizer, sampler) that needs only torch and writes the same text as "
                       "`tinylm generate`")
    s.add_argument("checkpoint", help="a checkpoint folder")
    s.add_argument("-o", "--out", default="infer.py", help="the .py file to write "
                   "(default: infer.py)")
    s.add_argument("--weights-beside", action="store_true", help="write the weights to "
                   "OUT.safetensors beside the script instead of embedding them")
    s.add_argument("--no-check", action="store_true", help="skip loading the written file and "
                   "comparing it with tinylm")
    s.add_argument("--force", action="store_true", help="replace an existing output not "
                   "written by tinylm")
    s.set_defaults(func=cmd_export_single_file)
    b = sub.add_parser("bitnet", help="a bitnet checkpoint's ternary weights packed at 2 or "
                       "1.6 bits (tinylm.export.bitnet_pack)")
    b.add_argument("checkpoint", help="a bitnet checkpoint folder")
    b.add_argument("-o", "--out", default="model.tlm", help="the file to write (default: "
                   "model.tlm)")
    b.add_argument("--packing", choices=("base3", "2bit"), default="base3",
                   help="base3: 5 weights a byte (1.6 bits); 2bit: 4 a byte (default: base3)")
    b.add_argument("--embeddings", choices=("fp16", "fp32"), default="fp16",
                   help="dtype of the full-precision tensors: the tied embedding and the norm "
                        "gains (default: fp16)")
    b.add_argument("--force", action="store_true", help="replace an existing output not "
                   "written by tinylm")
    b.set_defaults(func=cmd_export_bitnet)
    c = sub.add_parser("c", help="a folder with a dependency-free C99 engine (run.c), the "
                       "weights and the tokenizer; greedy output equals `tinylm generate`")
    c.add_argument("checkpoint", help="a llama, looped or bitnet checkpoint folder")
    c.add_argument("-o", "--out", default="c_engine", help="the folder to write (default: "
                   "c_engine)")
    c.add_argument("--freestanding", action="store_true", help="also write model_data.h: the "
                   "model as const arrays and static buffer sizes, for a build without malloc "
                   "or files (small cores)")
    c.add_argument("--fixed-point", action="store_true", help="with --freestanding: Q16.16 "
                   "integer numbers for cores without an FPU")
    c.add_argument("--prompt", default="Once upon a time", help="the freestanding build's "
                   "default prompt (it also reads one from argv)")
    c.add_argument("--max-new", type=int, default=256, help="the freestanding build's most "
                   "new tokens (sizes its id buffer; default 256)")
    c.add_argument("--force", action="store_true", help="replace existing outputs not "
                   "written by tinylm")
    c.set_defaults(func=cmd_export_c)
    h = sub.add_parser("hf", help="a Hugging Face folder (config.json, safetensors, "
                       "tokenizer, model card) that transformers loads offline")
    h.add_argument("checkpoint", help="a checkpoint folder")
    h.add_argument("-o", "--out", required=True, help="the folder to write")
    h.add_argument("--no-check", action="store_true", help="skip loading the folder with "
                   "transformers and comparing its logits with tinylm's")
    h.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this hub "
                   "repo (OWNER/NAME; needs network and `huggingface-cli login`)")
    h.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list what "
                   "would be uploaded, upload nothing")
    h.add_argument("--force", action="store_true", help="replace an existing output file not "
                   "written by tinylm")
    h.set_defaults(func=cmd_export_hf)
    g = sub.add_parser("gguf", help="a GGUF file (llama architecture) for llama.cpp")
    g.add_argument("checkpoint", help="a checkpoint folder")
    g.add_argument("-o", "--out", default="model.gguf", help="the .gguf file to write "
                   "(default: model.gguf)")
    g.add_argument("--dtype", choices=("f32", "f16"), default="f32", help="dtype of the "
                   "matrices; norms stay f32 as llama.cpp's converter keeps them (default: f32)")
    g.add_argument("--force", action="store_true", help="replace an existing output not "
                   "written by tinylm")
    g.set_defaults(func=cmd_export_gguf)
