"""Parts of the single-file inference script that are not tinylm's own code.

The model, the sampler and the decode loop of the generated file come from tinylm itself (the
`# %% export` regions of `tinylm/models/*.py` and `tinylm/infer/*.py`). What lives here is what
has no torch-only original: one pure-Python encoder per tokenizer kind (`tok_bytes`, `tok_bpe`,
`tok_unigram`, standing in for the `tokenizers` and `sentencepiece` libraries) and `runtime`
(weights loader, one-prompt generation, command line). Everything after a part's
`# %% export` line is copied into the generated file verbatim; what comes before it (this kind
of docstring, the imports, stand-ins for names another part defines) is there so the module can
be read, linted and imported on its own, and is left out.

The rules a part follows, because the generated file must need nothing but torch and the
standard library, and must give the same text as `tinylm generate`, bit for bit:

- import only what `single_file.HEADER_IMPORTS` imports (a test checks this);
- encode exactly as tinylm's tokenizers do (the tests compare them on real text).
"""
