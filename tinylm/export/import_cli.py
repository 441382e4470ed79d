"""`tinylm import ...` subcommands (registered into the main parser by `tinylm.cli`)."""

from __future__ import annotations


def cmd_import_hf(args) -> None:
    from tinylm.export.hf import import_hf
    from tinylm.io import check_output

    check_output(args.out, "checkpoint", inputs=[args.folder], force=args.force)
    done = import_hf(args.folder, args.out)
    print(f"wrote {done['out']} ({done['family']}, {done['parameters']:,} parameters, "
          f"tokenizer {done['tokenizer']}). Try:\n"
          f"  tinylm generate {done['out']} --prompt \"Once upon a time\" -n 50")


def register(subparsers) -> None:
    p = subparsers.add_parser("import", help="bring a model from outside tinylm")
    sub = p.add_subparsers(dest="import_command", required=True)
    h = sub.add_parser("hf", help="a local Hugging Face Llama folder (config.json + "
                       "safetensors + byte-level BPE tokenizer.json) -> a tinylm checkpoint")
    h.add_argument("folder", help="the Hugging Face model folder")
    h.add_argument("-o", "--out", required=True, help="the checkpoint folder to write")
    h.add_argument("--force", action="store_true", help="replace an existing output file not "
                   "written by tinylm")
    h.set_defaults(func=cmd_import_hf)
