"""The gate between a dataset folder and `tinylm train`: no training on benchmark test data.

`tinylm train --data DATASET_DIR` (or a mixture naming one) first checks every dataset folder
in `--data`: its bytes are its manifest's (`verify`), and its contamination check
(`checks/contamination.json`, 13-gram overlap with the benchmarks tinylm scores, written by
`tinylm data decontaminate`) is of these bytes and found no hits. With no such check the scan
is run now when the decontamination module is installed. A dataset with hits is refused
unless `--allow-contaminated`, which trains anyway and says so.

`--curriculum` needs a single dataset folder ranked by `tinylm data rank`.
"""

from __future__ import annotations

from pathlib import Path

from tinylm.errors import TinyLMError


def is_dataset_folder(name: str) -> bool:
    from tinylm.data.curate.dataset import is_dataset

    path = Path(name)
    return path.is_dir() and is_dataset(path)


def check_training_data(data: str, data_dir=None, curriculum: bool = False,
                        allow_contaminated: bool = False, log=print) -> str:
    """`data` with dataset folders made absolute (run.json must find them on resume), after
    the checks above; raises TinyLMError with the reason when training must not start."""
    from tinylm.data.mixture import parse_mixture

    sources = parse_mixture(data)
    folders = [name for name, _ in sources if is_dataset_folder(name)]
    if curriculum:
        check_curriculum(sources, folders)
    for folder in folders:
        check_contamination(folder, data_dir, allow_contaminated, log)
    if not folders:
        return data
    if len(sources) == 1:
        return str(Path(data).resolve())
    return ",".join(f"{Path(n).resolve() if n in folders else n}:{w}" for n, w in sources)


def check_curriculum(sources, folders) -> None:
    from tinylm.data.curate.dataset import open_dataset

    if len(sources) != 1 or not folders:
        raise TinyLMError("--curriculum needs --data to be one dataset folder ranked by "
                          "`tinylm data rank`")
    if "curriculum" not in open_dataset(folders[0], verify=False).info:
        raise TinyLMError(f"--curriculum: {folders[0]} has no curriculum order; make one with "
                          f"`tinylm data rank {folders[0]} --out RANKED`")


def contamination_of(dataset, data_dir=None) -> dict | None:
    """The contamination check of these bytes: stored, else computed now, else None when the
    decontamination module is not installed."""
    from tinylm.data.curate.dataset import read_check

    found = read_check(dataset, "contamination")
    if found is not None:
        return found
    try:
        from tinylm.data.curate.contamination import check_dataset
    except ImportError:
        return None
    return check_dataset(dataset, data_dir=data_dir)


def check_contamination(folder: str, data_dir, allow: bool, log) -> None:
    from tinylm.data.curate.dataset import open_dataset

    dataset = open_dataset(folder)  # refuses bytes that differ from the manifest
    found = contamination_of(dataset, data_dir)
    if found is None:
        if allow:
            log(f"{folder}: not checked for contamination (--allow-contaminated)")
            return
        raise TinyLMError(f"{folder}: no contamination check of these bytes; run `tinylm data "
                          f"decontaminate {folder}` first (or pass --allow-contaminated)")
    hits = int(found.get("hits", 0))
    if hits == 0:
        return
    where = ", ".join(_hits_of(name, value) for name, value in
                      (found.get("by_benchmark") or {}).items() if _rows_of(value))
    message = (f"{folder}: {hits} row(s) overlap benchmark test data (13-gram)"
               + (f": {where}" if where else ""))
    if not allow:
        raise TinyLMError(f"{message}; remove them with `tinylm data decontaminate` or pass "
                          f"--allow-contaminated")
    log(f"warning: {message}; training anyway (--allow-contaminated)")


def _rows_of(value) -> int:
    return int(value.get("rows", 0)) if isinstance(value, dict) else int(value or 0)


def _hits_of(benchmark: str, value) -> str:
    """'wikitext-2: 1 row (e.g. tinystories/x.jsonl:2)': the benchmark, its count, one row."""
    rows = _rows_of(value)
    examples = value.get("examples") if isinstance(value, dict) else None
    first = examples[0].get("row") if examples and isinstance(examples[0], dict) else None
    return f"{benchmark}: {rows} row{'s' if rows != 1 else ''}" + (f" (e.g. {first})"
                                                                  if first else "")
