"""`tinylm export ...` subcommands (registered into the main parser by `tinylm.cli`)."""

from __future__ import annotations


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
