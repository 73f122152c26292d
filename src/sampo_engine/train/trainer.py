"""The SAMPO training loop, shared by ``sampo-engine train`` and the napari plugin.

:meth:`Trainer.steps` is a generator: it yields a :class:`StepEvent` after every optimiser step
and an epoch event after every validation, so a GUI wraps it in a worker and a terminal in tqdm.
A ``stop`` callable is polled between steps; a stop ends the run cleanly after the current step
and writes a checkpoint and the bundle.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sampo_engine._config import to_jsonable
from sampo_engine.data.crops import CropDataset, collate
from sampo_engine.data.sample import NucleiDataset
from sampo_engine.errors import ConfigError, DataError, SampoError
from sampo_engine.losses import LossConfig
from sampo_engine.models.bundle import (
    BASE_WEIGHTS_FILE,
    BundleInfo,
    prepare_out_dir,
    write_bundle_metadata,
)
from sampo_engine.models.lora import (
    load_lora_weights,
    load_trainable_state,
    save_lora_weights,
    trainable_state,
)
from sampo_engine.prompts import MiningConfig
from sampo_engine.tasks import tasks_of
from sampo_engine.train import distributed
from sampo_engine.train.config import TrainConfig
from sampo_engine.train.step import forward_loss, step_metrics
from sampo_engine.utils.atomic import atomic_path, write_text_atomic
from sampo_engine.utils.device import resolve_device, seed_everything


class TrainingDiverged(SampoError):
    """The loss became NaN or infinite."""


@dataclass
class StepEvent:
    kind: str  # 'step' | 'epoch' | 'done'
    step: int
    total_steps: int
    epoch: int
    metrics: dict = field(default_factory=dict)


def split_images(
    n: int, fraction: float, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded split of ``n`` whole images into (train, validation) index lists.

    Validation takes ``round(n·val_fraction)`` images (at least 1 when asked and n ≥ 2); the
    training fraction is then taken from the rest.
    """
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, round(n * val_fraction)))
    val, rest = sorted(order[:n_val]), order[n_val:]
    n_train = max(1, round(len(rest) * fraction))
    return sorted(rest[:n_train]), val


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, optionally sharded over ``world`` ranks (DDP)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world, self.epoch = n, seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = math.ceil(self.n / self.world)
        order += order[: per_rank * self.world - self.n]  # pad so every rank has as many
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


def load_training_data(config: TrainConfig) -> NucleiDataset:
    from sampo_engine.data.pool import open_datasets

    dataset = open_datasets(config.data, format=config.data_format)
    if len(dataset) == 0:
        raise DataError(
            f"no images found in {config.data}; see `sampo-engine train --help` for the layout"
        )
    if config.task in ("t2", "both") and not dataset.has_classes:
        if config.task == "t2":
            raise ConfigError(
                f"T2 needs class labels, but {config.data} has none (no <id>_class.tif / class map); "
                f"use --task t1"
            )
    return dataset


class Trainer:
    """Runs one training job described by a :class:`TrainConfig`.

    ``dataset`` may be given directly (the plugin passes layers); otherwise ``config.data`` is read.
    """

    def __init__(
        self, config: TrainConfig, dataset: NucleiDataset | None = None, log=print, base_model=None
    ):
        config.validate()
        self.dist = distributed.context()  # distributed: rank/world (1 process outside torchrun)
        self.log = log if self.dist.is_main else _quiet  # distributed: rank 0 speaks
        self.dataset = dataset if dataset is not None else load_training_data(config)
        if config.task == "both" and not self.dataset.has_classes:
            self.log("the data has no classes: training T1 only")
            config = dataclasses.replace(config, task="t1")  # the caller's config stays as given
        self.config = config
        self.device = self.dist.device if self.dist.enabled else resolve_device(config.device)
        # distributed: ^ cuda:LOCAL_RANK (nccl) or the CPU (gloo) under torchrun
        self.loss_config = LossConfig(
            alpha=config.alpha,
            beta=config.beta,
            lam=config.lam,
            tie_margin=config.tie_margin,
            use_inter=not config.no_inter,
            use_intra=not config.no_intra,
            use_sup=not config.no_sup,
            literal_scoring=config.literal_scoring,
        )
        seed_everything(config.seed)
        train_idx, val_idx = split_images(
            len(self.dataset), config.fraction, config.val_fraction, config.seed
        )
        mining = MiningConfig(num_sets=config.num_prompt_sets)
        self.train_data = CropDataset(
            self.dataset, train_idx, config.image_size, config.task, mining, config.seed
        )
        if not self.train_data.usable:
            raise DataError(
                f"none of the {len(train_idx)} training images has nuclei for task {config.task} "
                f"({len(self.train_data.skipped_empty)} without any nucleus); check the labels"
            )
        if self.train_data.skipped_empty:
            self.log(f"skipped {len(self.train_data.skipped_empty)} image(s) without nuclei")
        self.val_indices = val_idx
        self.val_queries = self._make_val_queries()
        self.adapted, self.base_checkpoint, self.base_sha = self._build_model(base_model)
        self.adapted.to(self.device)
        self.corrections = self._load_corrections()  # None without --corrections
        # every input is checked above: only now is --out touched, so a refused run leaves the
        # user's folder as it was (and needs no --overwrite when retried)
        # distributed: rank 0 prepares --out; its result or error reaches every rank
        self.out = distributed.on_main(prepare_out_dir, config.out, config.resume, config.overwrite)
        params = self.adapted.trainable_parameters()
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        per_rank = math.ceil(len(self.train_data) / self.dist.world)  # distributed: a shard
        self.steps_per_epoch = math.ceil(per_rank / config.batch_size)
        total = self.steps_per_epoch * config.epochs
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.global_step = 0
        self.start_epoch = 0
        self.history: list[dict] = []
        self.epoch_history: list[dict] = []
        if config.resume:
            self._load_checkpoint()
        # distributed: the DDP-wrapped policy forward (None in one process)
        self.policy = distributed.wrap_policy(self.adapted, self.loss_config)

    def _load_corrections(self):
        """The correction records of ``config.corrections`` as a dataset, or None."""
        cfg = self.config
        if not cfg.corrections:
            return None
        if self.dist.enabled:
            raise ConfigError(
                "--corrections is not supported under torchrun; train with corrections in one "
                "process (they are few and small)"
            )
        from sampo_engine.corrections.pairs import CorrectionsDataset
        from sampo_engine.corrections.store import open_corrections

        records = open_corrections(cfg.corrections)
        data = CorrectionsDataset(records, cfg.image_size, cfg.seed)
        if not len(data):
            raise DataError(f"none of the correction records in {cfg.corrections} has prompts")
        self.log(
            f"{len(data)} correction record(s) from {cfg.corrections}, weight "
            f"{cfg.corrections_weight}"
        )
        return data

    # ----------------------------------------------------------------- set-up
    def _lr_factor(self, step: int) -> float:
        warm = self.config.warmup_steps
        if warm and step < warm:
            return (step + 1) / warm
        span = max(1, self.total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / span)))

    def _make_val_queries(self):
        from sampo_engine.scoring.queries import make_queries

        if not self.val_indices:
            return []
        queries = []
        for task in tasks_of(self.config.task):
            queries += make_queries(
                self.dataset,
                self.val_indices,
                self.config.image_size,
                task,
                seed=self.config.seed,
                max_queries=self.config.eval_crops,
            )
        return queries

    def _build_model(self, base_model):
        from sampo_engine.models.build import build_sam
        from sampo_engine.models.loading import checkpoint_sha256, resolve_checkpoint
        from sampo_engine.models.lora import add_lora, full_finetune

        cfg = self.config
        init = _init_bundle(cfg)  # init_adapter: the bundle this run continues from, or None
        checkpoint = cfg.checkpoint or None
        if init is not None:
            checkpoint = _init_checkpoint(init, cfg)
        ckpt = resolve_checkpoint(cfg.model, checkpoint)
        sam = base_model if base_model is not None else build_sam(cfg.model, ckpt, cfg.image_size)
        if ckpt is None:
            self.log(f"{cfg.model}: random initial weights (no checkpoint)")
        adapted = full_finetune(sam) if cfg.full else add_lora(sam, rank=cfg.lora_rank)
        if init is not None:
            _load_init_adapter(adapted, init, cfg, checkpoint_sha256(ckpt), self.log)
        self.log(
            f"{cfg.model} at {cfg.image_size} px, {'full fine-tuning' if cfg.full else f'LoRA rank {cfg.lora_rank}'}: "
            f"{adapted.num_trainable():,} trainable parameters on {self.device}"
        )
        return adapted, ckpt, checkpoint_sha256(ckpt)

    # ----------------------------------------------------------------- state
    def _save_checkpoint(self, epoch: int) -> None:
        state = {
            "epoch": epoch,
            "global_step": self.global_step,
            "model": trainable_state(self.adapted),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": to_jsonable(self.config),
        }
        with atomic_path(self.out / "checkpoint.pt") as tmp:
            torch.save(state, tmp)

    def _load_checkpoint(self) -> None:
        # distributed: rank 0 reads the checkpoint and hands it to every rank
        state = distributed.on_main(
            torch.load, self.out / "checkpoint.pt", map_location="cpu", weights_only=False
        )
        load_trainable_state(self.adapted, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.start_epoch = state["epoch"] + 1
        self.global_step = state["global_step"]
        if not self.dist.is_main:  # distributed: the logs are rank 0's
            return
        self.history = [
            m for m in _read_jsonl(self.out / "metrics.jsonl") if m["step"] <= self.global_step
        ]
        self.epoch_history = [
            m for m in _read_jsonl(self.out / "epochs.jsonl") if m["epoch"] <= state["epoch"]
        ]
        _write_jsonl(self.out / "metrics.jsonl", self.history)
        _write_jsonl(self.out / "epochs.jsonl", self.epoch_history)
        self.log(f"resumed {self.out} after epoch {state['epoch'] + 1} (step {self.global_step})")

    def write_bundle(self, epochs_done: int, complete: bool) -> BundleInfo:
        """Write the weights and the metadata (last) into the output folder."""
        cfg = self.config
        if self.adapted.mode == "lora":
            save_lora_weights(self.adapted, self.out)
        else:
            from sampo_engine.models.build import save_base_checkpoint

            save_base_checkpoint(self.adapted.sam, self.out / BASE_WEIGHTS_FILE)
        final = dict(self.epoch_history[-1]) if self.epoch_history else {}
        info = BundleInfo(
            path=self.out,
            kind="lora" if self.adapted.mode == "lora" else "full",
            model_type=cfg.model,
            image_size=cfg.image_size,
            rank=None if cfg.full else cfg.lora_rank,
            base_checkpoint=str(Path(self.base_checkpoint).resolve())
            if self.base_checkpoint
            else None,
            base_sha256=self.base_sha,
            task=cfg.task,
            class_names=dict(self.dataset.class_names),
            name=cfg.adapter_name,
            metrics=final,
            epochs_done=epochs_done,
            complete=complete,
            config=to_jsonable(cfg),
        )
        write_bundle_metadata(info)
        return info

    # ----------------------------------------------------------------- loop
    def validate(self) -> dict:
        from sampo_engine.scoring.queries import score_queries, summarize

        if not self.val_queries:
            return {}
        scores = score_queries(self.adapted, self.val_queries, batch_size=8, device=self.device)
        return summarize(self.val_queries, scores)

    def steps(self, stop: Callable[[], bool] | None = None) -> Iterator[StepEvent]:
        """Train, yielding after each step and each epoch; finally write the bundle.

        torch's CPU thread count is set for the run (``config.threads``, 0 = auto: see
        :mod:`sampo_engine.utils.threads`) in the thread that iterates, and restored after.
        """
        from sampo_engine.utils.threads import configure_threads

        previous = torch.get_num_threads()
        if self.device.type == "cpu" or self.config.threads:
            configure_threads(self.config.threads, log=self.log)
        try:
            yield from self._steps(stop)
        finally:
            torch.set_num_threads(previous)

    def _steps(self, stop: Callable[[], bool] | None) -> Iterator[StepEvent]:
        cfg = self.config
        # distributed: rank r takes entries r::world of the seeded permutation
        sampler = EpochSampler(len(self.train_data), cfg.seed, self.dist.rank, self.dist.world)
        loader = torch.utils.data.DataLoader(
            self.train_data,
            batch_size=cfg.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=cfg.workers,
            drop_last=False,
        )
        stopped = False
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.epochs):
            if self.global_step >= self.total_steps or stopped:
                epoch -= 1
                break
            sampler.set_epoch(epoch)
            self.train_data.set_epoch(epoch)
            self.adapted.train()
            t0 = time.perf_counter()
            for batch in loader:
                metrics = self._train_step(batch)
                metrics.update(
                    step=self.global_step,
                    epoch=epoch,
                    lr=self.scheduler.get_last_lr()[0],
                    seconds=time.perf_counter() - t0,
                )
                t0 = time.perf_counter()
                self.history.append(metrics)
                if self.dist.is_main:  # distributed: rank 0 writes
                    _append_jsonl(self.out / "metrics.jsonl", metrics)
                yield StepEvent("step", self.global_step, self.total_steps, epoch, metrics)
                if self.global_step >= self.total_steps or (stop is not None and stop()):
                    stopped = self.global_step < self.total_steps
                    break
            val = distributed.on_main(self.validate)  # distributed: rank 0 validates
            record = {"epoch": epoch, "step": self.global_step, **val}
            self.epoch_history.append(record)
            # distributed: rank 0 writes (the others wait for it, and share its errors)
            distributed.on_main(_append_jsonl, self.out / "epochs.jsonl", record)
            distributed.on_main(self._save_checkpoint, epoch)
            distributed.on_main(self.write_bundle, epoch + 1, complete=False)
            yield StepEvent("epoch", self.global_step, self.total_steps, epoch, record)
            if stopped:
                break
        info = distributed.on_main(self.write_bundle, epoch + 1, complete=not stopped)
        if self.dist.is_main:  # distributed: rank 0 writes
            self._plot()
            (self.out / "sampo_run.json").unlink(missing_ok=True)
        yield StepEvent(
            "done",
            self.global_step,
            self.total_steps,
            epoch,
            {"bundle": str(info.path), **info.metrics, "stopped": stopped},
        )

    def _train_step(self, batch) -> dict:
        try:
            # distributed: policy = the DDP-wrapped forward; global_loss weighs this rank's pairs
            result = forward_loss(
                self.adapted,
                batch,
                self.loss_config,
                self.device,
                policy=self.policy,
                reference_precision=self.config.reference_precision,
            )
            result.loss = distributed.global_loss(result.loss, self.loss_config)
            loss = result.loss.loss
            corr_metrics = {}
            if self.corrections is not None:  # the pathologist's offline pairs
                loss, corr_metrics = self._corrections_loss(loss)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {float(loss.detach())} at step {self.global_step + 1}; stopped. The last "
                    f"good checkpoint in {self.out} is kept — lower --lr or --beta and --resume"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(
                    self.adapted.trainable_parameters(), self.config.grad_clip
                )
            self.optimizer.step()
            self.scheduler.step()
        except torch.cuda.OutOfMemoryError:
            raise SampoError(
                f"CUDA ran out of memory at batch size {self.config.batch_size}, input "
                f"{self.config.image_size} px; use a smaller --batch-size or --image-size"
            ) from None
        self.global_step += 1
        metrics = distributed.mean_metrics(step_metrics(result))  # distributed: mean over ranks
        metrics.update(corr_metrics)
        return metrics

    def _corrections_loss(self, loss):
        """Add w·L_corr of one corrections batch to ``loss``."""
        from sampo_engine.train.corrections_loss import corrections_term

        cfg = self.config
        batch = self.corrections.batch(self.global_step, cfg.batch_size)
        corr, metrics = corrections_term(
            self.adapted,
            batch,
            cfg.beta,
            self.device,
            reference_precision=cfg.reference_precision,
            use_sup=not cfg.no_sup,
        )
        return loss + cfg.corrections_weight * corr, metrics

    def run(
        self,
        progress: Callable[[StepEvent], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> StepEvent:
        """Run to the end; ``progress`` receives every event. Returns the final ('done') event."""
        event = None
        for event in self.steps(stop):
            if progress is not None:
                progress(event)
        return event

    def _plot(self) -> None:
        from sampo_engine.train.plots import plot_training

        try:
            plot_training(self.history, self.epoch_history, self.out / "loss_curve.png")
        except Exception as err:  # a plot must never cost the user the trained adapter
            self.log(f"could not draw the training curves: {err}")


def _quiet(*args, **kwargs) -> None:
    pass


# ------------------------------------------------------------------ init_adapter
def _init_bundle(cfg: TrainConfig) -> BundleInfo | None:
    """init_adapter: the bundle a run continues from, checked against the run's model and size."""
    if not cfg.init_adapter:
        return None
    from sampo_engine.models.bundle import check_compatible, read_bundle

    info = read_bundle(cfg.init_adapter)
    check_compatible(info, cfg.model, cfg.image_size)
    if info.kind == "lora" and cfg.full:
        raise ConfigError(
            f"adapter {info.path} holds LoRA weights, which a --full run has no place for; "
            f"drop --full to continue its LoRA training"
        )
    if info.kind == "lora" and int(info.rank or 0) != cfg.lora_rank:
        raise ConfigError(
            f"adapter {info.path} has LoRA rank {info.rank}, this run {cfg.lora_rank}; "
            f"use --lora-rank {info.rank} to continue it"
        )
    if info.kind == "full" and cfg.checkpoint:
        raise ConfigError(
            f"adapter {info.path} is a --full bundle: its base.pth is the starting model, so "
            f"--checkpoint {cfg.checkpoint} has no use; drop one of the two"
        )
    return info


def _init_checkpoint(info: BundleInfo, cfg: TrainConfig) -> str | None:
    """init_adapter: the base weights to build: a --full bundle's own base.pth; for LoRA the
    --checkpoint given, else the bundle's base checkpoint when it is still there (else the
    cached official one, found as usual)."""
    if info.kind == "full":
        return str(info.weights_file)
    if cfg.checkpoint:
        return cfg.checkpoint
    if info.base_checkpoint and Path(info.base_checkpoint).is_file():
        return info.base_checkpoint
    return None


def _load_init_adapter(adapted, info: BundleInfo, cfg: TrainConfig, base_sha, log) -> None:
    """init_adapter: put a LoRA bundle's weights into the fresh LoRA layers (the DPO reference
    stays the base model, as in the run that made the adapter: the same objective, continued)."""
    from sampo_engine.models.bundle import check_compatible

    if info.kind == "full":
        log(f"starting from the weights of {info.name} ({info.path})")
        return
    check_compatible(info, cfg.model, cfg.image_size, base_sha)
    load_lora_weights(adapted, info.weights_file)
    log(f"LoRA weights initialised from {info.name} ({info.path})")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: everything after it is lost anyway
    return rows


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
