"""The training loop each Ray Train worker runs (`train_loop_per_worker`).

Design choices:
- One loop for every method; `ember.training.strategies` hides FSDP2/DDP/DeepSpeed.
- Steps are optimizer steps. The data position is derived from the step, so a
  resumed run continues with the batch after the checkpoint's last one.
- Every rank calls `ray.train.report` at the same steps (it is a barrier):
  every `log_every` steps with metrics, every `checkpoint_every` steps and at
  the end with a checkpoint. Rank 0 also prints progress and logs to MLflow.
- Validation at step 0 measures the base model; its loss and perplexity are
  kept in the checkpoint's `trainer_state.json`, so a resumed run still knows them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ember.training.config import SFTJobConfig

STATE_FILE = "trainer_state.json"


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train

    config = SFTJobConfig.model_validate(loop_config["job"])
    if config.method.name == "deepspeed":
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if config.scaling.use_gpu else "cpu")
    Worker(config, loop_config, ray.train.get_context()).run()


class Worker:
    def __init__(self, config: SFTJobConfig, loop_config: dict, context) -> None:
        import ray.train.torch
        import torch

        from ember.training.modeling import load_tokenizer
        from ember.training.strategies import build_strategy

        self.config = config
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        torch.manual_seed(config.train.seed + self.rank)
        self.tokenizer = load_tokenizer(config)
        train, val = self._datasets(loop_config)
        self.train_loader = self._loader(train, shuffle=True)
        self.val_loader = self._loader(val, shuffle=False) if val else None
        self.total_steps = total_steps(config, len(self.train_loader))
        self.strategy = build_strategy(config, self.device, self.total_steps, self.rank,
                                       self.world)
        self.tracker = None
        if self.rank == 0 and loop_config.get("mlflow"):
            from ember.training.tracking import WorkerTracker

            self.tracker = WorkerTracker(**loop_config["mlflow"])
        self.state = {"step": 0}
        self.batches = None
        self.step_times: list[float] = []

    def _datasets(self, loop_config: dict):
        import ray

        if self.config.data.synthetic is not None:
            from ember.training.modeling import model_path
            from ember.training.prepared_data import synthetic_data

            vocab = self.config.model.config_overrides.get("vocab_size")
            if vocab is None:
                from transformers import AutoConfig

                vocab = AutoConfig.from_pretrained(model_path(self.config)).vocab_size
            return synthetic_data(self.config, vocab)
        return as_tensors(ray.get(loop_config["train_ref"])), \
            as_tensors(ray.get(loop_config["val_ref"]))

    def _loader(self, rows: list[dict], shuffle: bool):
        from functools import partial

        from torch.utils.data import DataLoader, DistributedSampler

        from ember.training.sft_data import collate

        sampler = DistributedSampler(rows, num_replicas=self.world, rank=self.rank,
                                     shuffle=shuffle, seed=self.config.data.seed)
        return DataLoader(rows, batch_size=self.config.train.batch_size, sampler=sampler,
                          collate_fn=partial(collate, pad_id=self.tokenizer.pad_token_id),
                          pin_memory=self.config.scaling.use_gpu)

    # -- the run ---------------------------------------------------------------------

    def run(self) -> None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                self._resume(Path(folder))
        else:
            self._announce()
            if self.val_loader is not None:
                self.state.update({f"base_{k}": v for k, v in self.evaluate().items()})
                self._log({k: v for k, v in self.state.items() if k.startswith("base_")})
        self.strategy.train(True)
        self.batches = self._batches()
        while self.state["step"] < self.total_steps:
            self._train_until_next_report()
        self._finish()

    def _announce(self) -> None:
        from ember.training.modeling import count_parameters

        trainable, total = count_parameters(self.strategy.inner)
        self._print(f"training {self.config.name}: method {self.config.method.name}, "
                    f"{self.world} worker(s) on {self.device}, {self.total_steps} steps, "
                    f"{len(self.train_loader)} batches/epoch/worker, trainable "
                    f"{trainable:,} of {total:,} parameters")
        self._log({"trainable_params": trainable, "total_params": total})

    def _resume(self, folder: Path) -> None:
        self.strategy.load_state(folder)
        self.state = json.loads((folder / STATE_FILE).read_text())
        self.state["resumed_from_step"] = self.state["step"]
        self._print(f"resumed from the checkpoint at step {self.state['step']}")
        self._log({"resumed_from_step": self.state["step"]})

    def _batches(self):
        """Micro-batches from the current data position onwards, across epochs."""
        per_epoch = len(self.train_loader)
        done = self.state["step"] * self.config.train.grad_accum
        epoch, skip = divmod(done, per_epoch)
        while True:
            self.train_loader.sampler.set_epoch(epoch)
            yield from itertools.islice(self.train_loader, skip, None)
            epoch, skip = epoch + 1, 0

    def _train_until_next_report(self) -> None:
        import torch

        train = self.config.train
        batches = self.batches
        loss_sum = torch.zeros((), device=self.device)
        tokens, window_start, window_steps = 0, time.perf_counter(), 0
        while self.state["step"] < self.total_steps:
            step_start = time.perf_counter()
            for _ in range(train.grad_accum):
                batch = next(batches)
                tokens += int(batch["attention_mask"].sum())  # on the CPU: no GPU sync
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                loss = self.strategy.loss(batch)
                self.strategy.backward(loss)
                self.strategy.micro_step()
                loss_sum += loss.detach()
            grad_norm = self.strategy.step()
            self._sync()
            self.step_times.append(time.perf_counter() - step_start)
            self.state["step"] += 1
            window_steps += 1
            step = self.state["step"]
            if step % train.log_every == 0 or step == self.total_steps:
                metrics = self._window_metrics(loss_sum, tokens, window_start, window_steps)
                metrics.update(grad_norm=grad_norm, lr=self.strategy.lr)
                if step == self.total_steps:
                    metrics["median_step_time_s"] = self._median_step_time()
                self._progress(metrics)
                self._report(metrics, with_checkpoint=self._checkpoint_due(step))
                return

    def _window_metrics(self, loss_sum, tokens: int, start: float, steps: int) -> dict:
        import torch
        import torch.distributed as dist

        totals = torch.tensor([float(loss_sum), float(tokens)], device=self.device)
        dist.all_reduce(totals)
        seconds = time.perf_counter() - start
        micro = steps * self.config.train.grad_accum * self.world
        metrics = {"loss": totals[0].item() / micro, "tokens_per_s": totals[1].item() / seconds,
                   "step_time_s": seconds / steps}
        if torch.cuda.is_available() and self.config.scaling.use_gpu:
            metrics["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return metrics

    def _checkpoint_due(self, step: int) -> str | None:
        """"full" (resumable state), "summary" (only trainer_state.json) or None.

        Ray Train V2 returns metrics to the driver only with a checkpoint, so a run
        without `checkpoint_at_end` (a benchmark) ends with a summary checkpoint: its
        metrics, no weights. Such a run cannot be resumed past its end.
        """
        every = self.config.train.checkpoint_every
        if step == self.total_steps:
            return "full" if self.config.train.checkpoint_at_end else "summary"
        return "full" if every > 0 and step % every == 0 else None

    def _eval_due(self, step: int) -> bool:
        every = self.config.train.eval_every
        return self.val_loader is not None and (
            step == self.total_steps or (every > 0 and step % every == 0))

    def _report(self, metrics: dict, with_checkpoint: str | None) -> None:
        import ray.train

        step = self.state["step"]
        if self._eval_due(step):
            evaluation = self.evaluate()
            self.strategy.train(True)
            self.state.update({f"last_{k}": v for k, v in evaluation.items()})
            metrics.update(evaluation)
            self._print(f"step {step}/{self.total_steps} validation loss "
                        f"{evaluation['val_loss']:.4f} perplexity "
                        f"{evaluation['val_perplexity']:.2f}")
        metrics["step"] = step
        self._log(metrics)
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="ember-ckpt-") as tmp:
            folder = Path(tmp)
            if with_checkpoint == "full":
                self.strategy.save_state(folder)
                if step == self.total_steps:
                    self.strategy.export(folder / "export", self.tokenizer)
            if self.rank == 0:
                (folder / STATE_FILE).write_text(json.dumps(self.state, indent=1))
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if any(folder.iterdir()) \
                else None
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_dir_name=f"checkpoint_{step:06d}")

    def evaluate(self) -> dict:
        import torch
        import torch.distributed as dist

        self.strategy.train(False)
        totals = torch.zeros(2, device=self.device)
        limit = self.config.train.eval_batches
        with torch.no_grad():
            for batch in itertools.islice(self.val_loader, limit):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                n = (batch["labels"][:, 1:] != -100).sum()
                totals += torch.stack([self.strategy.loss(batch).float() * n, n.float()])
        dist.all_reduce(totals)
        loss = (totals[0] / totals[1].clamp(min=1)).item()
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50))}

    def _median_step_time(self) -> float:
        # The first steps include warm-up (allocator, kernels, autotuning): skip two.
        times = self.step_times[2:] if len(self.step_times) > 5 else self.step_times
        return statistics.median(times) if times else float("nan")

    def _finish(self) -> None:
        if self.step_times:
            self._print(f"done: {self.state['step']} steps, median step "
                        f"{self._median_step_time():.3f} s")

    # -- output ----------------------------------------------------------------------

    def _sync(self) -> None:
        import torch

        if self.config.scaling.use_gpu and torch.cuda.is_available():
            torch.cuda.synchronize()

    def _progress(self, metrics: dict) -> None:
        parts = [f"step {self.state['step']}/{self.total_steps}",
                 f"loss {metrics['loss']:.4f}", f"lr {metrics['lr']:.2e}",
                 f"grad_norm {metrics['grad_norm']:.3f}",
                 f"{metrics['tokens_per_s']:.0f} tok/s"]
        if "peak_mem_gb" in metrics:
            parts.append(f"peak {metrics['peak_mem_gb']:.1f} GiB")
        self._print(" | ".join(parts))

    def _print(self, message: str) -> None:
        # Not print(): Ray Train patches print on workers to both log and echo it,
        # which shows every progress line twice in the driver's output.
        if self.rank == 0:
            sys.stdout.write(f"[ember.train] {message}\n")
            sys.stdout.flush()

    def _log(self, metrics: dict) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=self.state["step"])


def as_tensors(rows: list[dict]) -> list[dict]:
    """Token lists to tensors once, so batches collate without Python loops."""
    import torch

    return [{k: torch.tensor(v, dtype=torch.long) for k, v in row.items()} for row in rows]


def total_steps(config: SFTJobConfig, batches_per_epoch: int) -> int:
    if config.train.max_steps is not None:
        return config.train.max_steps
    return max(1, math.ceil(config.train.epochs * batches_per_epoch / config.train.grad_accum))
