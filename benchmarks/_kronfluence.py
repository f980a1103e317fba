"""kronfluence's per-module influence scores, converted to captum-layerinf's convention.

captum-layerinf: for layer l, `s_l(j, k) = ∇L(test_k)ᵀ (H_l + λI)⁻¹ ∇L(train_j)`,
H_l the Hessian block of the MEAN training loss, λ absolute, positive = proponent.

What kronfluence 1.0.1 computes (paths under `site-packages/kronfluence/`), and why no
rescaling is needed once the task below is used:

- Gradients: per-example gradients are read off the output gradients of the batch loss
  (`module/linear.py:68-77`, `module/conv2d.py:164-177`), so the task returns the SUMMED
  cross-entropy (as kronfluence's examples do): then they are the per-example gradients
  ∇L(z_j) (a mean would scale them by 1/batch). Weight and bias are one block, as ours.
- Curvature normalisation: EK-FAC's eigenvalue correction Λ is the sum over examples of the
  squared per-example gradients in the K-FAC eigenbasis (`module/tracker/factor.py:203-226`)
  divided by the number of examples (`factor/config.py:332`): the Fisher of the MEAN loss,
  our H_l's scale. (The covariances A, S are divided by their row counts,
  `factor/eigen.py:199`; EK-FAC only uses their eigenvectors.)
- Fisher labels: the factors call `compute_train_loss(sample=not use_empirical_fisher)`
  (`factor/covariance.py:224`, `factor/eigen.py:418`); sampling is the task's job. Default
  (`fisher="sampled"`): one label per example drawn from the model's softmax, a one-sample
  Monte Carlo of the true Fisher (= the GGN = the exact Hessian block for piecewise-linear
  nets with cross-entropy). `fisher="empirical"`: `use_empirical_fisher=True`, true labels.
  `fisher="expected"` (ours, not a kronfluence option): the exact expectation over labels,
  by fitting the factors on the training set expanded to n·C rows (x_i, c) weighted by
  sqrt(C·p_c(x_i)); the C·(1/C) cancels in every count-normalised statistic.
- Damping: `damping_factor` is added, as an absolute number, to Λ (`factor/config.py:333-337`);
  the eigenbasis is orthonormal, so this is (F̂_l + λI)⁻¹ with our λ. `None` means
  0.1·mean(Λ) (`utils/constants.py:22`); its default is 1e-8 (`arguments.py:164-165`).
  `strategy="identity"` ignores damping (`factor/config.py:159-165`), as ours.
- Sign: score = (preconditioned query gradient) · (train gradient), no minus sign
  (`module/tracker/pairwise_score.py:41-45`, `module/linear.py:112-122`), with the
  measurement = the test loss: positive = proponent, our sign.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

FISHERS = ("sampled", "empirical", "expected")


def _task_class():
    from kronfluence.task import Task

    class ClassificationTask(Task):
        """Summed cross-entropy; the measurement is the test example's loss."""

        def __init__(self, tracked: list[str], fisher: str, n_classes: int) -> None:
            self.tracked = tracked
            self.fisher = fisher
            self.n_classes = n_classes

        def compute_train_loss(self, batch, model: nn.Module, sample: bool = False):
            logits = model(batch[0])
            if not sample:
                return F.cross_entropy(logits, batch[1], reduction="sum")
            if self.fisher == "expected":
                # Rows (x_i, y_i, c): weight sqrt(C p_c(x_i)), so that the count-normalised
                # sums over the n*C rows are the expectation over c ~ p(.|x_i).
                c = batch[2]
                with torch.no_grad():
                    p = torch.softmax(logits, -1).gather(1, c[:, None]).squeeze(1)
                    w = (self.n_classes * p).sqrt()
                return (w * F.cross_entropy(logits, c, reduction="none")).sum()
            with torch.no_grad():
                probs = torch.softmax(logits.detach(), dim=-1)
                labels = torch.multinomial(probs, num_samples=1).flatten()
            return F.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch, model: nn.Module):
            return F.cross_entropy(model(batch[0]), batch[1], reduction="sum")

        def get_influence_tracked_modules(self):
            return self.tracked

    return ClassificationTask


def _n_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[-1])


def kronfluence_layer_scores(
    model: nn.Module,
    train: TensorDataset,
    test: TensorDataset,
    layers: list[str],
    damping: float,
    strategy: str = "ekfac",
    workdir: str | Path | None = None,
    batch_size: int = 64,
    fisher: str = "sampled",
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """Per-module scores [n_layers, n_test, n_train] in captum-layerinf's convention, and
    seconds (factor fitting + scoring).

    Args:
        model: The trained classifier (deep-copied; the caller's model is left unchanged).
        train, test: `TensorDataset(x, y)`; `y` class indices.
        layers: Dotted names of `nn.Linear` / `nn.Conv2d` modules ("" for a model that is one).
        damping: Absolute λ added to the curvature of the mean loss (as ours).
        strategy: kronfluence's "identity", "diagonal", "kfac" or "ekfac".
        workdir: Where kronfluence writes its factors and scores (default: a temp dir).
        batch_size: Batch size of every kronfluence pass.
        fisher: Labels of the Fisher: "sampled" (kronfluence's default true Fisher, one
            sample per example), "empirical" (true labels) or "expected" (exact expectation).
        seed: Seed of the sampled labels (the global RNG is restored afterwards).

    Returns:
        `(scores, seconds)`; scores in float64.
    """
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    if fisher not in FISHERS:
        raise ValueError(f"fisher must be one of {FISHERS}; got {fisher!r}.")
    x, y = train.tensors
    dtype = next(model.parameters()).dtype
    # A model that is itself one layer is not wrapped by kronfluence (`module/utils.py:28,88`
    # set an attribute "" on the model itself, silently), so every model goes in a Sequential.
    wrapped = nn.Sequential(copy.deepcopy(model)).cpu()
    names = ["0" if name == "" else f"0.{name}" for name in layers]
    n_classes = _n_classes(wrapped, x)
    task = _task_class()(names, fisher, n_classes)

    fit_data: TensorDataset = train
    if fisher == "expected":
        classes = torch.arange(n_classes).repeat(len(y))
        fit_data = TensorDataset(
            x.repeat_interleave(n_classes, 0), y.repeat_interleave(n_classes, 0), classes
        )
    # kronfluence's statistics default to float32; a float64 model gets float64 throughout.
    wide = dtype != torch.float32
    fdt = ("activation_covariance", "gradient_covariance", "per_sample_gradient", "lambda")
    sdt = ("per_sample_gradient", "precondition", "score")
    factor_args = FactorArguments(
        strategy=strategy,
        use_empirical_fisher=fisher == "empirical",
        covariance_max_examples=None,
        lambda_max_examples=None,
        **({f"{k}_dtype": dtype for k in fdt} if wide else {}),
    )
    score_args = ScoreArguments(
        damping_factor=damping,
        compute_per_module_scores=True,
        **({f"{k}_dtype": dtype for k in sdt} if wide else {}),
    )

    # Not Analyzer(log_level=...): that also sets the ROOT logger's level (utils/logger.py:51-53).
    kf_logger = logging.getLogger("kronfluence")
    old_level = kf_logger.level
    kf_logger.setLevel(logging.WARNING)
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    out = Path(tmp.name if tmp is not None else workdir)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng():
            warnings.simplefilter("ignore")
            torch.manual_seed(seed)
            start = time.perf_counter()
            wrapped = prepare_model(wrapped, task)
            analyzer = Analyzer(
                analysis_name="layerinf",
                model=wrapped,
                task=task,
                cpu=True,
                disable_tqdm=True,
                output_dir=str(out),
            )
            analyzer.set_dataloader_kwargs(DataLoaderKwargs(num_workers=0))
            analyzer.fit_all_factors(
                factors_name=strategy,
                dataset=fit_data,
                per_device_batch_size=batch_size,
                factor_args=factor_args,
                overwrite_output_dir=True,
            )
            analyzer.compute_pairwise_scores(
                scores_name="scores",
                factors_name=strategy,
                query_dataset=test,
                train_dataset=train,
                per_device_query_batch_size=batch_size,
                per_device_train_batch_size=batch_size,
                score_args=score_args,
                overwrite_output_dir=True,
            )
            scores = analyzer.load_pairwise_scores("scores")
            seconds = time.perf_counter() - start
    finally:
        kf_logger.setLevel(old_level)
        if tmp is not None:
            tmp.cleanup()
    return torch.stack([scores[name].double() for name in names]), seconds
