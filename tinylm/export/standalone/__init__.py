"""Parts of the single-file inference script that `tinylm export single-file` writes.

Each module here is one part of the generated file: `layers` (the shared blocks), one module per
model family (`llama`, ...), one per tokenizer kind (`tok_bytes`, `tok_bpe`, ...) and `runtime`
(weights loader, sampler, generation loop, command line). Everything after a module's
`# %% export` line is copied into the generated file verbatim; what comes before it (this kind
of docstring, the imports, stand-ins for names another part defines) is there so the module can
be read, linted and imported on its own, and is left out.

The rules a part follows, because the generated file must need nothing but torch and the
standard library, and must give the same text as `tinylm generate`, bit for bit:

- import only what `single_file.HEADER_IMPORTS` imports (a test checks this);
- do each floating-point operation exactly as tinylm's model and sampler do it, in the same
  order and with the same shapes (the same `F.*` calls, the same pre-allocated KV cache), since
  a different but mathematically equal form can round differently and change a sampled token;
- keep state-dict names identical to tinylm's, so a checkpoint's `model.safetensors` loads
  into the exported model as it is.
"""
