"""The training loop: config in, run folder out.

Reproducibility: every epoch seeds its own shuffling, augmentation and dropout from
``(seed, epoch)``, so a run resumed from its last checkpoint replays the interrupted epoch
exactly and ends with the metrics of an uninterrupted run (tested with a real SIGKILL).

Under ``torchrun`` (``convlens.distributed``) every process draws the same batches and
augmentations, takes every N-th image of each batch and computes the gradient of its share of
the batch's mean loss; DistributedDataParallel sums them, so a step is the one-process step on
the same global batch (up to float rounding) for a model without batch norm or dropout (batch
norm normalises by each process's share, dropout draws its own masks). Process 0 validates,
logs and writes the run folder; the others only train.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import __version__, checkpoint, distributed, runload
from ..config import ExperimentConfig, defaults_note, load_config
from ..data import Augment, DataBundle, batches, load_data, num_batches
from ..errors import ConvlensError, RunError
from ..heap import reuse_freed_blocks
from ..models import build_model, summarize, totals
from ..models.whiten import init_whitening
from ..run import Layout, Run, write_status
from ..runlock import LOCK, RunBusy, holder, run_lock, writes_run
from ..utils import interactive
from .averaging import WeightAverage
from .evaluate import evaluate_split, test_precision, write_eval
from .metrics import MetricsLog
from .optim import make_optimizer, make_scheduler
from .precision import Precision, busy_note, choose
from .resize import epoch_size, resize_batch


class Stop(Exception):
    """Raised by an epoch callback to end a run early with a status (e.g. ``pruned``)."""

    def __init__(self, status: str = "pruned", message: str = ""):
        super().__init__(message)
        self.status, self.message = status, message


EpochCallback = Callable[[dict[str, Any]], None]


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


def default_out(cfg: ExperimentConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _sigterm_to_interrupt(signum, frame):  # a `kill` is handled like Ctrl-C: checkpoint kept, status written
    raise KeyboardInterrupt


class Trainer:
    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        data: DataBundle,
        prec: Precision,
        echo: Callable[[str], None],
        callback: EpochCallback | None,
    ):
        self.cfg, self.run_dir, self.data, self.prec, self.echo, self.callback = (
            cfg,
            run_dir,
            data,
            prec,
            echo,
            callback,
        )
        t = cfg.train
        torch.manual_seed(cfg.seed)  # the initial weights: same seed, same network
        self.model = build_model(cfg.model, data.shape, data.num_classes, data.mean, data.std)
        self.model.to(prec.device, memory_format=torch.channels_last if prec.channels_last else torch.contiguous_format)
        init_whitening(self.model, data.train.images)  # `init: whiten` convs start from the data
        # several torchrun processes: the training steps go through DDP, everything else reads self.model
        self.world = distributed.world()
        self.stepper = self.model
        if self.world is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.stepper = DistributedDataParallel(self.model)
        self.train_split = self._to_device(data.train)
        self.val_split = self._to_device(data.val) if data.val is not None else None
        self.steps_per_epoch = num_batches(len(data.train), t.batch_size)
        self.opt = make_optimizer(self.model, t.optimizer, bf16=prec.bf16)
        # float16 autocast (train.precision: fp16, CUDA) scales the loss so small gradients do not
        # underflow; disabled, every call below passes straight through to the optimiser
        self.scaler = torch.amp.GradScaler(prec.device.type, enabled=prec.fp16)
        self.sched = make_scheduler(self.opt, t.schedule, t.epochs * self.steps_per_epoch, self.steps_per_epoch)
        self.augment = Augment(cfg.data.augment, data.mean, cfg.seed)
        total = t.epochs * self.steps_per_epoch
        self.average = WeightAverage(self.model, t.average, total) if t.average is not None else None
        self.start_epoch = 0
        self.best = {"val_acc": -1.0, "epoch": 0}
        # the biases of conv layers with frozen filters (`freeze: true`), for train.frozen_bias_epochs
        self.frozen_biases = [
            m.bias
            for m in self.model.modules()
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None and not m.weight.requires_grad
        ]

    def _to_device(self, split):
        if self.prec.device.type == "cpu" or not isinstance(split.images, torch.Tensor):
            return split  # images read from the image cache stay there: batches are pinned and copied
        # uint8 images live on the GPU: one upload instead of one per batch
        from ..data import Split

        return Split(split.images.to(self.prec.device), split.labels.to(self.prec.device), split.indices)

    # -- state ----------------------------------------------------------------------------------
    def state(self, epoch: int) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": epoch,
            "best": dict(self.best),
            "config": self.cfg.to_dict(),
            "version": __version__,
        }
        if self.average is not None:
            state["average"] = self.average.state_dict()
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def eval_weights(self) -> dict[str, Any]:
        """The weights that are validated and saved as best: the average when averaging is on."""
        return self.average.averaged_state() if self.average is not None else self.model.state_dict()

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.start_epoch = int(state["epoch"])
        self.best = dict(state["best"])
        if self.average is not None and "average" in state:
            self.average.load_state_dict(state["average"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    # -- one epoch ------------------------------------------------------------------------------
    def _share(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This process's images of a batch and ``share``: the batch's mean loss is the sum of
        their losses / share (DDP averages the processes' gradients: the sum over all / len(y))."""
        if self.world is None:
            return x, y, len(y)
        rank, size = self.world
        return x[rank::size], y[rank::size], len(y) / size

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, share: float) -> torch.Tensor:
        smoothing = self.cfg.train.label_smoothing
        if self.world is None:
            return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing, reduction="sum") / share

    def _summed(
        self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The epoch's loss sum, correct count and images over every process."""
        if self.world is None:
            return loss_sum, correct, seen
        import torch.distributed as dist

        count = torch.tensor(float(seen), dtype=torch.float64, device=loss_sum.device)
        both = torch.stack([loss_sum, correct.double(), count])  # on the device: NCCL reduces GPU tensors
        dist.all_reduce(both)
        return both[0], both[1], int(both[2])

    def train_epoch(self, epoch: int) -> dict[str, float]:
        t = self.cfg.train
        seed = epoch_seed(self.cfg.seed, epoch)
        torch.manual_seed(seed)  # dropout
        g = torch.Generator().manual_seed(seed)  # order and augmentation
        self.model.train()
        if t.frozen_bias_epochs is not None:
            # with the first layer's bias frozen too, no gradient flows below the second layer:
            # its input gradient and the first activation's backward are skipped (~10% of a step)
            for b in self.frozen_biases:
                b.requires_grad_(epoch < t.frozen_bias_epochs)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.prec.device)
        correct = torch.zeros((), dtype=torch.long, device=self.prec.device)
        seen = 0
        it = batches(
            self.train_split,
            t.batch_size,
            shuffle=True,
            generator=g,
            augment=self.augment,
            epoch=epoch,
            device=self.prec.device,
            channels_last=self.prec.channels_last,
            random_crop=True,
        )
        bar = None
        if interactive():
            from tqdm.auto import tqdm

            it = bar = tqdm(
                it,
                total=self.steps_per_epoch,
                desc=f"epoch {epoch + 1}/{t.epochs}",
                leave=False,
                unit="batch",
                dynamic_ncols=True,
            )
        check_every = 1 if self.prec.device.type == "cpu" else 25  # .item() syncs a GPU
        rs = t.resize_schedule
        size = epoch_size(rs.sizes, rs.fraction, epoch, t.epochs) if rs is not None else None
        for step, (x, y, _) in enumerate(it):
            x = resize_batch(x, size)
            if len(y) < 2 and seen:  # a lone trailing image breaks batch norm's batch statistics
                continue
            x, y, share = self._share(x, y)
            with self.prec.autocast():
                logits = self.stepper(x)
            loss = self._loss(logits, y, share)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t.grad_clip:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            if self.average is not None:
                self.average.update()
            loss_sum += loss.detach().double() * share
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if step % check_every == 0 and not math.isfinite(float(loss_sum)):
                break
            if bar is not None and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", refresh=False)
        if bar is not None:
            bar.close()
        loss_sum, correct, seen = self._summed(loss_sum, correct, seen)
        if self.average is not None and epoch + 1 == t.epochs:
            self.average.finish()  # the last checkpoint and the test evaluation use the average
        return {"train_loss": float(loss_sum) / max(seen, 1), "train_acc": float(correct) / max(seen, 1)}

    def validate(self) -> dict[str, float]:
        if self.val_split is None:
            return {"val_loss": None, "val_acc": None}
        with self.average.applied() if self.average is not None else contextlib.nullcontext():
            res, _ = evaluate_split(
                self.model, self.val_split, self.data.classes, batch_size=self.cfg.eval.batch_size, precision=self.prec
            )
        return {"val_loss": res["loss"], "val_acc": res["accuracy"]}

    def evaluate_epoch(self, epoch: int) -> dict[str, float | None]:
        """Validation (every ``train.eval_every`` epochs and the last) and, with
        ``eval.every_epoch``, the test split."""
        t = self.cfg.train
        if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
            row = self.validate()
            if t.clean_subset:
                row["train_clean_acc"] = self.train_clean()
                row["clean_gap"] = None if row["val_acc"] is None else row["train_clean_acc"] - row["val_acc"]
        else:
            row = {"val_loss": None, "val_acc": None}
        if self.cfg.eval.every_epoch:
            row.update(self.test_epoch())
        return row

    def train_clean(self) -> float:
        """``train.clean_subset``: the accuracy on a fixed set of training images (the first N), in
        eval mode and without augmentation. Minus val_acc it is ``clean_gap``, a generalisation gap
        that dropout and augmentation do not shrink by construction, as the running train_acc's does."""
        if not hasattr(self, "clean_split"):
            n = min(self.cfg.train.clean_subset, len(self.train_split))
            self.clean_split = self.train_split.take(torch.arange(n))
        with self.average.applied() if self.average is not None else contextlib.nullcontext():
            res, _ = evaluate_split(
                self.model,
                self.clean_split,
                self.data.classes,
                batch_size=self.cfg.eval.batch_size,
                precision=self.prec,
            )
        return res["accuracy"]

    def test_epoch(self) -> dict[str, float]:
        """The test split after an epoch (``eval.every_epoch``): logged as test, never compared."""
        if not hasattr(self, "test_split"):
            self.test_split = self._to_device(self.data.test)
        with self.average.applied() if self.average is not None else contextlib.nullcontext():
            res, _ = evaluate_split(
                self.model,
                self.test_split,
                self.data.classes,
                batch_size=self.cfg.eval.batch_size,
                precision=test_precision(self.prec, self.cfg.eval.precision),
            )
        return {"test_loss": res["loss"], "test_acc": res["accuracy"]}


def _fmt_row(row: dict[str, Any], epochs: int) -> str:
    s = f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:5.1f}%"
    if row.get("val_acc") is not None:
        s += f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:5.1f}%"
    return s + f"  lr {row['lr']:.3g}  {row['epoch_seconds']:.1f}s"


def _leftovers_only(run_dir: Path) -> bool:
    """True for a folder holding nothing but what a run killed before writing its config leaves
    (the lock file, an empty checkpoints folder): it is started afresh, not refused."""
    for p in run_dir.iterdir():
        if p.name == LOCK or (p == Layout(run_dir).checkpoint_dir and p.is_dir() and not any(p.iterdir())):
            continue
        return False
    return True


def _prepare_dir(run_dir: Path) -> None:
    if run_dir.exists() and not _leftovers_only(run_dir):
        busy = holder(run_dir)
        if busy:
            raise RunBusy(f"{run_dir} is in use by {busy}; choose another --out")
        raise RunError(
            f"{run_dir} already exists and is not empty; choose another --out, or continue it with "
            f"`convlens train --resume {run_dir}`"
        )
    Layout(run_dir).checkpoint_dir.mkdir(parents=True, exist_ok=True)


def train(
    config: ExperimentConfig | str | Path | dict | None = None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    overrides: list[str] | None = None,
    echo: Callable[[str], None] | None = None,
    callback: EpochCallback | None = None,
) -> Run:
    """Train as configured and return the finished :class:`~convlens.run.Run`.

    With ``resume=RUN``, the run's own config and last checkpoint are used and training continues
    from the epoch after the checkpoint; ``overrides`` may then change ``train.epochs`` only.
    """
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    with contextlib.ExitStack() as held:  # the run folder's lock, from when it is known to the end
        held.enter_context(reuse_freed_blocks())  # a step's buffers, kept for the next step
        return _train(config, out, resume, overrides, echo, callback, held)


def _train(config, out, resume, overrides, echo, callback, held: contextlib.ExitStack) -> Run:
    if resume is not None:
        run_dir = Path(resume)
        if run_dir.is_dir() and not Layout(run_dir).config_file.is_file() and _leftovers_only(run_dir):
            raise RunError(
                f"{run_dir} was stopped before training began (it has no config.yaml); start it "
                f"again with `convlens train CONFIG --out {run_dir}`"
            )
        prior = Run(run_dir)
        held.enter_context(run_lock(run_dir, "train --resume"))
        raw = prior.config.to_dict()
        bad = [o for o in overrides or [] if not o.startswith("train.epochs=")]
        if bad or config is not None:
            raise RunError(
                f"--resume continues {run_dir} with its own config; only train.epochs may change (got {bad or config})"
            )
        cfg = load_config(raw, overrides)
    else:
        cfg = load_config(config, overrides)
        run_dir = Path(out) if out is not None else default_out(cfg)

    # Everything that can fail on bad input happens before the run folder is created.
    has_conv = cfg.model.layers is None or any(getattr(layer, "type", "") == "conv" for layer in cfg.model.layers)
    if cfg.model.preset in ("rnn", "lstm", "gru"):
        has_conv = False
    prec = choose(cfg.train.device, cfg.train.precision, cfg.train.channels_last, cfg.train.threads, has_conv)
    if distributed.world() is not None:  # one of several torchrun processes: they share a group
        held.enter_context(distributed.process_group(str(prec.device)))
    data = load_data(cfg.data)
    cfg = cfg.model_copy(deep=True)
    cfg.data.mean, cfg.data.std = list(data.mean), list(data.std)
    if cfg.data.root and not Path(cfg.data.root).expanduser().is_absolute():
        # the run folder is read later from anywhere (analyze, report): keep where the data was
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    cfg.meta = {
        "convlens_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
        "precision": prec.describe(),
    }
    trainer = Trainer(cfg, run_dir, data, prec, echo, callback)
    layout = Layout(run_dir)
    last = layout.checkpoint_file("last")
    if trainer.world is not None and trainer.world[0] != 0:
        return _follow(trainer, last if resume is not None and last.is_file() else None, prec, run_dir)
    if resume is not None and last.is_file():
        trainer.restore(checkpoint.load(last, map_location=prec.device))
        if trainer.start_epoch > cfg.train.epochs:
            raise RunError(
                f"train.epochs={cfg.train.epochs} is fewer than the {trainer.start_epoch} epochs {run_dir} has "
                f"trained already; --resume continues to a later epoch (train.epochs >= {trainer.start_epoch}), "
                "it cannot undo epochs"
            )
        if prior.status.get("status") == "finished" and trainer.start_epoch >= cfg.train.epochs:
            echo(f"{run_dir} is already finished ({trainer.start_epoch} epochs)")
            return Run(run_dir)
    elif resume is not None:
        # killed before its first checkpoint: the same seed trains it from the start, as if new
        echo(f"{run_dir} has no checkpoint yet: training it from the first epoch")
        layout.checkpoint_dir.mkdir(exist_ok=True)
        layout.checkpoint_file("best").unlink(missing_ok=True)
        shutil.rmtree(layout.tb_dir, ignore_errors=True)
    else:
        _prepare_dir(run_dir)
        held.enter_context(run_lock(run_dir, "train"))
    layout.write_config(cfg)
    layout.write_dataset(data.describe())
    rows = summarize(trainer.model, data.shape)
    layout.write_summary({"layers": [r.to_dict() for r in rows], **totals(rows)})
    return _run(trainer, cfg, run_dir, data, prec, echo)


def _follow(trainer: Trainer, last: Path | None, prec: Precision, run_dir: Path) -> Run:
    """A torchrun process other than the first: its share of every training step, no writes."""
    if last is not None:
        trainer.restore(checkpoint.load(last, map_location=prec.device))
    for epoch in range(trainer.start_epoch, trainer.cfg.train.epochs):
        trainer.train_epoch(epoch)
    return Run(run_dir)


def _run(trainer: Trainer, cfg: ExperimentConfig, run_dir: Path, data: DataBundle, prec: Precision, echo) -> Run:
    t = cfg.train
    epochs = t.epochs
    echo(
        f"run {run_dir}: {cfg.model.preset or 'custom'} on {data.name} ({len(data.train)} train"
        f"{f', {len(data.val)} val' if data.val is not None else ''}, {len(data.test)} test), "
        f"{totals(summarize(trainer.model, data.shape))['params']:,} parameters, {prec.describe()}"
        f"{defaults_note(cfg)}"
    )
    busy = busy_note(prec.threads) if t.threads is None else None
    if busy:
        echo(busy)
    if t.batch_size > len(data.train):
        echo(
            f"note: train.batch_size={t.batch_size} is larger than the {len(data.train)} training images: "
            "every step uses the whole training set, one step per epoch"
        )
    write_status(run_dir, "running", epoch=trainer.start_epoch, epochs=epochs)
    board = t.tensorboard
    log = MetricsLog(run_dir, trainer.start_epoch, tensorboard=board.enabled)
    log.text_config(cfg)
    log.hparams(cfg)
    old_term = signal.signal(signal.SIGTERM, _sigterm_to_interrupt) if _main_thread() else None
    epoch = trainer.start_epoch
    try:
        for epoch in range(trainer.start_epoch, epochs):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update(trainer.train_epoch(epoch))
            limit = math.inf if t.diverge_factor is None else t.diverge_factor * math.log(max(2, data.num_classes))
            if not math.isfinite(row["train_loss"]) or row["train_loss"] > limit:
                what = (
                    "became NaN or infinite"
                    if not math.isfinite(row["train_loss"])
                    else f"reached {row['train_loss']:.3g} (> {limit:.3g})"
                )
                msg = (
                    f"diverged in epoch {epoch + 1}: the training loss {what}. "
                    f"Try a lower learning rate than train.optimizer.lr={t.optimizer.lr}."
                )
                log.write(
                    {
                        **row,
                        "lr": trainer.opt.param_groups[0]["lr"],
                        "epoch_seconds": time.perf_counter() - t0,
                        "val_loss": None,
                        "val_acc": None,
                        "gap": None,
                    }
                )
                echo(msg)
                _final_eval(trainer, cfg, run_dir, data, prec, echo, log, diverged=True)
                write_status(run_dir, "diverged", epoch=epoch, epochs=epochs, message=msg)
                return Run(run_dir)
            row.update(trainer.evaluate_epoch(epoch))
            row["lr"] = trainer.opt.param_groups[0]["lr"]
            row["epoch_seconds"] = round(time.perf_counter() - t0, 3)
            row["gap"] = None if row["val_acc"] is None else row["train_acc"] - row["val_acc"]
            improved = row["val_acc"] is None or row["val_acc"] > trainer.best["val_acc"]
            if improved:
                trainer.best = {"val_acc": row["val_acc"] if row["val_acc"] is not None else -1.0, "epoch": epoch + 1}
            # last.pt is written last: it commits the epoch. Killed before it, a resume redoes the
            # epoch from the previous last.pt, drops its metrics row and rewrites the same best.pt.
            if improved:
                checkpoint.save(
                    Layout(run_dir).checkpoint_file("best"),
                    {
                        "model": trainer.eval_weights(),
                        "epoch": epoch + 1,
                        "val_acc": row["val_acc"],
                        "config": cfg.to_dict(),
                        "version": __version__,
                    },
                )
            log.write(row)
            log.epoch_state(trainer.model, epoch + 1, histograms=board.histograms, images=board.images)
            checkpoint.save(Layout(run_dir).checkpoint_file("last"), trainer.state(epoch + 1))
            write_status(run_dir, "running", epoch=epoch + 1, epochs=epochs)
            echo(_fmt_row(row, epochs))
            if trainer.callback is not None:
                trainer.callback(row)
        _final_eval(trainer, cfg, run_dir, data, prec, echo, log)
        write_status(run_dir, "finished", epoch=epochs, epochs=epochs, best_epoch=trainer.best["epoch"])
    except Stop as stop:
        write_status(run_dir, stop.status, epoch=epoch + 1, epochs=epochs, message=stop.message)
        echo(f"stopped after epoch {epoch + 1}: {stop.status} {stop.message}".rstrip())
    except KeyboardInterrupt:
        done = Run(run_dir).status.get("epoch", 0)
        write_status(
            run_dir,
            "interrupted",
            epoch=done,
            epochs=epochs,
            message=f"interrupted during epoch {done + 1}; continue with `convlens train --resume {run_dir}`",
        )
        echo(f"\ninterrupted: {done} epoch(s) are saved; continue with `convlens train --resume {run_dir}`")
        raise
    except Exception as exc:
        message = str(exc) if isinstance(exc, ConvlensError) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):  # a full disk may refuse this too: the error above says why
            write_status(run_dir, "failed", epoch=epoch, epochs=epochs, message=message)
        raise
    finally:
        log.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return Run(run_dir)


def _final_eval(
    trainer: Trainer,
    cfg: ExperimentConfig,
    run_dir: Path,
    data: DataBundle,
    prec: Precision,
    echo,
    log: MetricsLog,
    diverged: bool = False,
) -> None:
    """The test evaluation. A diverged run is tested on the weights it saved before its loss broke
    (best.pt, or last.pt for ``eval.checkpoint: last``), as a report that tests its best epoch
    did; one that diverged in its first epoch saved none and has no test accuracy."""
    which = cfg.eval.checkpoint
    saved = Layout(run_dir).checkpoint_file(which)
    if diverged and not saved.is_file():
        echo("no test accuracy: the run diverged before it saved a checkpoint")
        return
    if (which == "best" or diverged) and saved.is_file():
        trainer.model.load_state_dict(checkpoint.load(saved, prec.device)["model"])
    test = trainer._to_device(data.test)
    result, logits = evaluate_split(
        trainer.model,
        test,
        data.classes,
        batch_size=cfg.eval.batch_size,
        tta=cfg.eval.tta,
        precision=test_precision(prec, cfg.eval.precision),
    )
    result.update(split="test", checkpoint=which, epoch=cfg.train.epochs if which == "last" else trainer.best["epoch"])
    write_eval(run_dir, result, data.test, logits)
    echo(
        f"test accuracy {100 * result['accuracy']:.2f}% ({result['n']} images, checkpoint {which}"
        f"{', TTA ' + cfg.eval.tta if cfg.eval.tta != 'none' else ''})"
    )
    board, epochs = cfg.train.tensorboard, cfg.train.epochs
    log.test(result, epochs, images=board.images)
    rows = Run(run_dir).metrics()
    vals = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    final = {"best_val_acc": max(vals) if vals else None, "test_acc": result["accuracy"]}
    log.final({**final, "final_train_acc": rows[-1].get("train_acc") if rows else None}, epochs)
    if board.enabled and board.embeddings:
        _log_embeddings(trainer.model, test, data, board.embedding_images, log, epochs)


def _log_embeddings(model, test, data: DataBundle, n: int, log: MetricsLog, epoch: int) -> None:
    """The input of the last linear layer (the penultimate features) for the first ``n`` test
    images, with their labels and thumbnails, for TensorBoard's projector."""
    from ..trace import borrowed

    last = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not last:
        return
    sub = test.take(list(range(min(n, len(test)))))
    with borrowed(model, grad=False):
        feats = []
        layer = dict(model.named_modules())[last[-1]]
        hook = layer.register_forward_hook(lambda m, i, o: feats.append(i[0].detach().float().flatten(1).cpu()))
        try:
            evaluate_split(model, sub, data.classes, batch_size=len(sub))
        finally:
            hook.remove()
    labels = [data.classes[int(k)] for k in sub.labels]
    log.embeddings(torch.cat(feats), labels, sub.images.float().cpu() / 255.0, epoch)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@writes_run("eval")
def evaluate_run(run: Run | str | Path, which: str = "last", tta: str | None = None, echo=None) -> dict[str, Any]:
    """Re-evaluate a run's checkpoint on its test split; rewrites eval.json and predictions.csv."""
    run = run if isinstance(run, Run) else Run(run)
    cfg = run.config
    prec = choose(cfg.train.device, cfg.train.precision, cfg.train.channels_last, cfg.train.threads)
    data = runload.load_data(run)
    model = runload.load_model(run, which, device=str(prec.device))
    tta = tta or cfg.eval.tta
    result, logits = evaluate_split(
        model,
        data.test,
        data.classes,
        batch_size=cfg.eval.batch_size,
        tta=tta,
        precision=test_precision(prec, cfg.eval.precision),
        progress=interactive(),
    )
    state = checkpoint.load(run.checkpoint_path(which))
    result.update(split="test", checkpoint=which, epoch=int(state.get("epoch", 0)))
    write_eval(run.path, result, data.test, logits)
    if echo:
        echo(f"test accuracy {100 * result['accuracy']:.2f}% ({result['n']} images, checkpoint {which}, TTA {tta})")
    return result
