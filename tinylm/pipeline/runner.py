"""The stages of `tinylm run`, in order, each resumable:

    train       tokenizer, token caches, training (killed runs resume exactly); every
                checkpoint is handed to a background scoring process as soon as it is written,
                so training never waits for a benchmark
    control     the recipe's same-compute control run (e.g. with a decay phase), if any
    score       wait for that scoring, score any checkpoint it missed
    tournament  SLERP tournament over the scored checkpoints (cached scores are reused)
    champion    the winner saved as an ordinary checkpoint, plus sample generations
    heldout     the champion, the best checkpoint, the best merge, the baselines and the
                control scored on the report split, with standard errors and paired tests
    card        the model card, from measured data only
    report      one self-contained HTML page

Choose on one split, report on another: every choice (the tournament, the best checkpoint)
reads only the selection split of each benchmark (WikiText-2 validation, ARC validation, one
half of each BLiMP paradigm); the held-out report split is read once, by `heldout`, for the
models already chosen.

Progress lives in RUN/pipeline.json (rewritten atomically): a stage listed as done is skipped,
so a second `tinylm run` redoes nothing, and a killed one continues where it stopped. Scores are
cached by model hash, so nothing is ever scored twice, across restarts too.

`STAGE_HOOKS` is the one injection point: each hook is called with the stage's name once
pipeline.json names it as running, just before the stage starts (the kill test stalls there).

Before anything is written, the recipe's settings, device, data and benchmark data are checked
and the folder must be new, empty or a run of ours; the folder is then locked for the whole
run (`tinylm.lock`), and every worker process dies with this one (`tinylm.procs`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.pipeline.recipe import Recipe
from tinylm.io import write_text_atomic

STAGES = ("train", "control", "score", "tournament", "champion", "heldout", "card", "report")

# Called as hook(stage_name) before each stage that runs (not for stages done already), after
# pipeline.json records it as running. Empty unless a caller (e.g. a test) registers one.
STAGE_HOOKS: list[Callable[[str], None]] = []


class Pipeline:
    def __init__(self, recipe: Recipe, out: Path | None = None, log=print):
        self.recipe = recipe
        self.out = Path(out or recipe.out or Path("runs") / recipe.name)
        self.log = log
        self.state_file = self.out / "pipeline.json"
        self.state = self._load_state()

    # ------------------------------------------------------------------ state

    def _load_state(self) -> dict:
        if self.state_file.is_file():
            try:
                state = json.loads(self.state_file.read_text())
            except ValueError as err:
                raise TinyLMError(f"{self.state_file}: corrupt pipeline state ({err})") from None
            if state.get("recipe") != json.loads(json.dumps(self.recipe.to_dict())):
                raise TinyLMError(f"{self.out} was started with another recipe; use another "
                                  f"--out or delete the folder")
            return state
        return {"recipe": self.recipe.to_dict(), "done": [], "seconds": {}}

    def _save_state(self) -> None:
        write_text_atomic(self.state_file, json.dumps(self.state, indent=1))

    def _mark(self, stage: str, seconds: float) -> None:
        self.state["seconds"][stage] = self.state["seconds"].get(stage, 0.0) + seconds
        if stage not in self.state["done"]:
            self.state["done"].append(stage)
        self._save_state()

    # ------------------------------------------------------------------ running

    def run(self) -> Path:
        from tinylm.lock import run_lock

        if "train" not in self.state["done"]:
            self.preflight()
        with run_lock(self.out, log=self.log):
            return self._run_stages()

    def preflight(self) -> None:
        """Refuse, with one line, what would fail later: before any file is written."""
        from tinylm.config import load_preset
        from tinylm.io import is_checkpoint_folder
        from tinylm.lock import LOCK_FILE
        from tinylm.train.session import build_train_config, check_out_folder, preflight

        if self.out.exists() and not self.state_file.is_file():
            if is_checkpoint_folder(self.out):
                raise TinyLMError(f"--out {self.out} is a checkpoint, not a run folder")
            check_out_folder(self.out)
            if not (self.out / "run.json").is_file() and self.out.is_dir() and any(
                    p.name != LOCK_FILE for p in self.out.iterdir()):
                raise TinyLMError(f"--out {self.out} holds files tinylm did not write")
        self.scorer()  # benchmarks and their data
        if (self.out / "run.json").is_file():
            return
        preset = load_preset(self.recipe.model.preset)
        config = build_train_config(preset, None, self.recipe.train_flags)
        preflight(config, self.recipe.data.name, self.recipe.data.data_dir,
                  self.recipe.model.tokenizer)

    def _run_stages(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.state_file.is_file():
            self._save_state()
        self.state.setdefault("hardware", hardware())
        for stage in STAGES:
            if stage in self.state["done"]:
                self.log(f"[{stage}] done already")
                continue
            self.log(f"[{stage}]")
            self.state["running"] = stage
            self._save_state()
            for hook in STAGE_HOOKS:
                hook(stage)
            started = time.perf_counter()
            getattr(self, f"stage_{stage}")()
            self._mark(stage, time.perf_counter() - started)
        self.state["running"] = None
        self._save_state()
        total = sum(self.state["seconds"].values())
        self.log(f"finished {self.recipe.name}: {self.out} ({total:.0f}s of work in all)")
        return self.out

    def scorer(self, split: str = "selection"):
        """The scorer of the selection split (what every choice reads), or of the report."""
        import dataclasses

        from tinylm.merge.scoring import make_scorer

        scoring = self.recipe.eval if split == "selection" else (self.recipe.report
                                                                 or self.recipe.eval)
        scoring = dataclasses.replace(scoring, settings=dataclasses.replace(scoring.settings,
                                                                            split=split))
        return make_scorer(scoring, self.recipe.data.data_dir)

    # ------------------------------------------------------------------ stages

    def stage_train(self) -> None:
        from tinylm.train.session import new_run, resume_run

        scorer, _ = self.scorer()
        from tinylm.procs import pool_initializer

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context, initializer=pool_initializer,
                                 initargs=(os.getpid(),)) as background:
            def on_checkpoint(path: Path) -> None:
                background.submit(scorer, path)  # scored while training goes on

            if self.recipe.processes > 1:
                self._train_distributed()
            elif (self.out / "run.json").is_file():
                resume_run(self.out, self.recipe.train_flags, on_checkpoint=on_checkpoint)
            else:
                new_run(self.recipe.model.preset, self.recipe.data.name,
                        self.recipe.data.data_dir, self.out, self.recipe.train_flags,
                        tokenizer_path=self.recipe.model.tokenizer, on_checkpoint=on_checkpoint,
                        model_overrides=self.recipe.model.config)

    def stage_control(self) -> None:
        """The same model, data, steps and tokenizer, with the recipe's [control] settings
        (e.g. a cosine decay against the main run's constant rate), in RUN/control."""
        from tinylm.train.session import new_run, resume_run

        if not self.recipe.control:
            self.log("  no [control] in the recipe")
            return
        folder, flags = self.out / "control", {**self.recipe.train_flags, **self.recipe.control}
        if (folder / "run.json").is_file():
            resume_run(folder, flags)
        else:
            new_run(self.recipe.model.preset, self.recipe.data.name, self.recipe.data.data_dir,
                    folder, flags, tokenizer_path=str(self.out / "tokenizer.json"),
                    model_overrides=self.recipe.model.config)

    def _train_distributed(self) -> None:
        """More than one process: train under torchrun (DDP; gloo on CPU, nccl on GPU)."""
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={self.recipe.processes}", "-m", "tinylm", "train",
                "--out", str(self.out)]
        if (self.out / "run.json").is_file():
            args.append("--resume")
        else:
            args += ["--preset", self.recipe.model.preset, "--data", self.recipe.data.name]
            if self.recipe.data.data_dir:
                args += ["--data-dir", self.recipe.data.data_dir]
            if self.recipe.model.tokenizer:
                args += ["--tokenizer", self.recipe.model.tokenizer]
        for key, value in self.recipe.train_flags.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        if subprocess.run(args).returncode != 0:
            raise TinyLMError("distributed training failed (see its output above)")

    def stage_score(self) -> None:
        from tinylm.train.checkpoint import list_checkpoints

        scorer, _ = self.scorer()
        for path in list_checkpoints(self.out / "checkpoints"):
            metrics = scorer(path)  # a cache hit for everything scored during training
            self.log(f"  {path.name}: composite {metrics['composite']:.4f}")

    def _tournament(self):
        from tinylm.merge.tournament import Tournament

        scorer, settings = self.scorer()
        return Tournament(self.out, self.recipe.tournament, scorer, settings, log=self.log)

    def stage_tournament(self) -> None:
        from tinylm.merge.report import write_report

        tournament = self._tournament()
        tournament.run()
        write_report(tournament)

    def stage_champion(self) -> None:
        import tinylm
        from tinylm.merge.tournament import save_champion

        path = save_champion(self._tournament(), self.out / "champion")
        model = tinylm.load(path)
        s = self.recipe.samples
        samples = []
        for prompt in s.prompts:
            text = model.generate(prompt, s.max_new_tokens, seed=s.seed, **asdict(s.sampling))
            samples.append({"prompt": prompt, "completion": text})
        settings = {"max_new_tokens": s.max_new_tokens, **asdict(s.sampling), "seed": s.seed}
        write_text_atomic(self.out / "samples.json",
                          json.dumps({"settings": settings, "samples": samples}, indent=1))

    def stage_heldout(self) -> None:
        from tinylm.pipeline.heldout import heldout_report

        path = heldout_report(self)
        self.log(f"  held-out report: {path}")

    def stage_card(self) -> None:
        from tinylm.pipeline.card import write_card

        write_card(self)

    def stage_report(self) -> None:
        from tinylm.pipeline.report import write_run_report

        path = write_run_report(self)
        self.log(f"  report: {path}")


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
