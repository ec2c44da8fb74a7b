"""train(): the configuration, the data, the state, then epochs of steps, each followed by
validation, calibration, a checkpoint and the model file."""
import dataclasses
import time

import numpy as np
import torch

from ..devices import resolve_device
from ..fileio import remove_stale_temporaries
from ..modelinfo import kept_summary
from ..network import autocast
from ..options import TrainOptions
from ..picking.tiles import predict_volume
from ..picking.tomogram import default_peak_smoothing
from ..volume import NORMALISED
from .calibration import calibrate, calibrate_by_count
from .config import TrainConfig
from .data import prepare_data, sample_batch
from .losses import compute_loss, consistency_loss, consistency_view, contrastive_term
from .state import TrainingState, load_checkpoint, one_cycle_lr


def train(train_vols, train_tables, class_names, diameters, out_path, val_vols=(), val_tables=(), options=None,
          resume=False, log=print, stop_after_epoch=None, **kw):
    """Train a picker; writes ``out_path`` (the best epoch's model) and ``out_path + '.ckpt'``
    (the last state; ``resume`` continues from it). Returns ``out_path``.

    ``options``: a :class:`picker3d.engine.options.TrainOptions` (default: every option at its
    default); keywords named as its fields override it. They are the options of ``picker3d
    train`` (``--help`` says what each does and its default; :class:`TrainConfig` checks them
    and resolves the automatic ones). ``stop_after_epoch`` ends the run after that epoch
    (tests of resume). Methods and measurements: docs/picking.md, docs/sparse_labels.md.

    Example::

        train([vol], [table], ["ribosome"], {"ribosome": 24}, "model.pt", minutes=10)
    """
    options = dataclasses.replace(options or TrainOptions(), **kw)
    if options.invert:
        train_vols, val_vols = [-np.asarray(v) for v in train_vols], [-np.asarray(v) for v in val_vols]
    ckpt_path = out_path + ".ckpt"
    # a run killed while writing left its temporaries beside the outputs: this run owns them
    remove_stale_temporaries(out_path, ".pt")
    remove_stale_temporaries(ckpt_path, ".ckpt")
    ck = load_checkpoint(ckpt_path, torch.device(resolve_device(options.device))) if resume else None
    cfg = TrainConfig.resolve(class_names, diameters, [np.shape(v) for v in train_vols], options, checkpoint=ck,
                              ckpt_path=ckpt_path, log=log)
    data = prepare_data(cfg, train_vols, train_tables, val_vols, val_tables, ck, ckpt_path, log)
    state = TrainingState(cfg, ck, ckpt_path, log)
    t_start = time.time() - state.train_seconds
    for epoch in range(state.start_epoch, cfg.epochs):
        t_epoch = time.time()
        losses = [train_step(cfg, data, state, t_start) for _ in range(cfg.iters_per_epoch)]
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_s": round(time.time() - t_epoch, 1)}
        t_val = time.time()
        entry.update(validate(cfg, data, state))
        entry["val_s"] = round(time.time() - t_val, 1)
        elapsed = time.time() - t_start
        state.history.append(entry)
        epoch_s = (elapsed - state.train_seconds) / (epoch + 1 - state.start_epoch)   # this session's mean
        log(_epoch_line(cfg, entry, epoch, elapsed, epoch_s))
        state.save_checkpoint(ckpt_path, epoch, elapsed)
        state.save_model(out_path, data.validated and cfg.val_labels == "complete")
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
        if cfg.minutes is not None and elapsed + epoch_s > 60.0 * cfg.minutes:
            log(f"time budget of {cfg.minutes} min reached after epoch {epoch + 1}")
            break
    log(kept_summary(state.history, state.best_thr, cfg.val_labels == "none"))
    return out_path


def train_step(cfg, data, state, t_start):
    """One optimiser step on a sampled batch; returns the loss."""
    model, dev, amp = state.model, cfg.device, cfg.amp
    model.train()
    x, y, offs, shapes = sample_batch(data.volumes, state.rng, cfg.patch_shape, cfg.batch, cfg.n_classes,
                                      augment=cfg.augment, max_angle=cfg.rotation)
    x, y = x.to(dev), y.to(dev)
    # coord-conv: one offset per patch
    with autocast(dev, amp):
        logits, feats = model(x, offset=offs, full_shape=shapes, features=True)
    logits, feats = logits.float(), feats.float()
    lval = compute_loss(cfg.loss, logits, y, cfg.n_classes, data.class_weight, data.priors)
    if cfg.consistency or cfg.contrastive:
        view, dims = consistency_view(x, state.rng)
        with autocast(dev, amp):
            view_logits, view_feats = model(view, offset=offs, full_shape=shapes, features=True)
        view_logits, view_feats = view_logits.float(), view_feats.float()
    if cfg.consistency:
        lval = lval + cfg.consistency * consistency_loss(logits, view_logits, dims, cfg.sparse)
    if cfg.contrastive:
        # the pn baseline has no class prior: 1 % stands in for the debiasing
        pis = data.priors if data.priors is not None else [0.01] * cfg.n_classes
        lval = lval + cfg.contrastive * contrastive_term(state.projection, feats, view_feats, dims, y, logits, pis,
                                                         state.rng)
    state.opt.zero_grad(set_to_none=True)
    lval.backward()
    # one-cycle position: by steps, or by elapsed time when a time budget is given (the
    # number of steps that fit in the budget is not known in advance)
    if cfg.minutes is None:
        frac = state.step / (cfg.epochs * cfg.iters_per_epoch)
    else:
        frac = (time.time() - t_start) / (60.0 * cfg.minutes)
    for group in state.opt.param_groups:
        group["lr"] = one_cycle_lr(frac, cfg.lr)
    state.opt.step()
    if state.averaged is not None:
        state.averaged.update(model, state.step)
    state.step += 1
    return float(lval.detach())


def validate(cfg, data, state):
    """Pick the calibration volumes with the averaged weights, calibrate the thresholds and
    keep the epoch if it is the best; returns the history entry's validation figures."""
    if not data.validated:
        state.keep_if_best(None, None)
        return {}
    probs = [predict_volume(state.evaluated, v, tile=cfg.tile, pad=cfg.pad, device=str(cfg.device),
                            flips=cfg.flips, stats=NORMALISED, precision=cfg.precision) for v in data.val_volumes]
    if cfg.val_labels in ("sparse", "none"):
        thr, recall, loc = calibrate_by_count(probs, list(data.val_tables), cfg.class_names, cfg.network_diameters,
                                              data.densities, smooth=default_peak_smoothing(cfg.sparse),
                                              label_diameters=cfg.label_diameters)
        state.keep_if_best(None if cfg.val_labels == "none" else recall, thr)
        return {"val_recall": recall, "val_loc_recall": loc}
    thr, f1, cf1 = calibrate(probs, list(data.val_tables), cfg.class_names, cfg.network_diameters,
                             t_segs=(0.1, 0.3, 0.5) if cfg.sparse else (0.3, 0.5),
                             smooth=default_peak_smoothing(cfg.sparse),
                             label_diameters=cfg.label_diameters)
    state.keep_if_best(f1, thr)
    return {"val_f1": f1, "val_class_f1": cf1}


def _epoch_line(cfg, entry, epoch, elapsed, epoch_s):
    if cfg.minutes is None:
        eta, of = epoch_s * (cfg.epochs - epoch - 1), f"/{cfg.epochs}"
    else:
        eta, of = max(60.0 * cfg.minutes - elapsed, 0.0), f" (budget {cfg.minutes:g} min)"
    vtxt = f"  val F1 {entry['val_f1']:.3f}  class F1 {entry['val_class_f1']:.3f}" if "val_f1" in entry else ""
    if "val_recall" in entry:
        vtxt = f"  annotated particles found {entry['val_recall']:.3f} (position {entry['val_loc_recall']:.3f})"
    return (f"epoch {epoch + 1}{of}  loss {entry['loss']:.4f}{vtxt}  (train {entry['train_s']:.0f}s, "
            f"validation {entry['val_s']:.0f}s)  elapsed {elapsed:.0f}s  ETA {eta:.0f}s")
