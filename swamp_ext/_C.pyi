"""Type stubs for the compiled module swamp_ext._C (bindings of the swamp_core C++ library)."""

from typing import Any, Callable, Optional

import torch

def version() -> str: ...
def built_with_torch_version() -> str: ...

class _PruneBackend:
    """swamp_ext._C.ops.PruneBackend"""

    auto: _PruneBackend
    native: _PruneBackend
    aten: _PruneBackend

class _MaskedSGD:
    """swamp_ext._C.ops.MaskedSGD"""

    def __init__(self, params: list[torch.Tensor], masks: list[torch.Tensor],
                 momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None: ...
    def step(self, lr: float, begin: Optional[int] = None, end: Optional[int] = None) -> None: ...
    def zero_grad(self, begin: Optional[int] = None, end: Optional[int] = None) -> None: ...
    def momentum_buffers(self) -> list[torch.Tensor]: ...

class _LossScaler:
    """swamp_ext._C.ops.LossScaler"""

    def __init__(self, init_scale: float = 65536.0, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> None: ...
    @property
    def scale(self) -> float: ...
    @property
    def growth_tracker(self) -> int: ...
    @property
    def consecutive_skips(self) -> int: ...
    def unscale(self, grads: list[torch.Tensor]) -> bool: ...
    def update(self, found_inf: bool) -> None: ...

class _Ops:
    PruneBackend: type[_PruneBackend]
    MaskedSGD: type[_MaskedSGD]
    LossScaler: type[_LossScaler]
    @staticmethod
    def prepare_inputs(x: torch.Tensor, mean: list[float], std: list[float],
                       crop_padding: int = 0, flip: bool = False,
                       seed: Optional[int] = None) -> torch.Tensor: ...
    @staticmethod
    def global_magnitude_prune(
        weights: list[torch.Tensor], masks: list[torch.Tensor], ratio: float,
        backend: _PruneBackend = ...,
    ) -> list[torch.Tensor]: ...
    @staticmethod
    def global_magnitude_prune_(weights: list[torch.Tensor], masks: list[torch.Tensor],
                                ratio: float,
                                backend: _PruneBackend = ...) -> tuple[int, int, float]: ...
    @staticmethod
    def prune_count(ratio: float, remaining: int) -> int: ...
    @staticmethod
    def nm_prune_(weights: list[torch.Tensor], masks: list[torch.Tensor], keep: int,
                  m: int) -> tuple[int, int]: ...
    @staticmethod
    def nm_fits(weight: torch.Tensor, m: int) -> bool: ...
    @staticmethod
    def parse_nm(pruning: str) -> Optional[tuple[int, int]]: ...
    @staticmethod
    def nm_keep_after(n: int, m: int, round: int) -> int: ...
    @staticmethod
    def lanes_concurrent() -> bool: ...
    @staticmethod
    def channels_last_enabled() -> bool: ...
    @staticmethod
    def gradient_sync_stats(reset: bool = False) -> dict[str, float]: ...
    @staticmethod
    def sync_batchnorm_active() -> bool: ...
    @staticmethod
    def sync_batch_norm(input: torch.Tensor, weight: Optional[torch.Tensor],
                        bias: Optional[torch.Tensor], running_mean: torch.Tensor,
                        running_var: torch.Tensor, num_batches_tracked: Optional[torch.Tensor],
                        momentum: Optional[float], eps: float) -> torch.Tensor: ...
    @staticmethod
    def learning_rate(kind: str, lr: float, total_steps: int, warmup_steps: int,
                      swa_start_step: int, swa_lr: float, step: int) -> float: ...
    @staticmethod
    def hash_seed(seed: int, round: int, particle: int, stream: int = 0) -> int: ...
    @staticmethod
    def batch_order(n: int, seed: int, round: int, particle: int, epoch: int) -> torch.Tensor: ...

ops: _Ops

class Config:
    model: str
    method: str
    particles: int
    rounds: int
    prune_ratio: float
    epochs: int
    rewind_epochs: int
    rewind_steps: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    warmup_epochs: float
    swa_start: float
    swa_lr: float
    use_swa: int
    single_particle_rounds: int
    keep_first_last_dense: bool
    seed: int
    device: str
    eval_batch_size: int
    bn_batch_size: int
    deterministic: bool
    augment: bool
    crop_padding: int
    flip: bool
    particle_mode: str
    sparse_kernels: str
    sparse_density: float
    sparse_conv_density: float
    precision: str
    diagnostics: bool
    channels_last: str
    sync_batchnorm: bool
    data_parallel: str
    def __init__(self) -> None: ...

def config_fields(config: Config) -> list[tuple[str, str]]: ...
def validate_config(config: Config, check_model: bool = True) -> None: ...
def validate_dataset(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                     y_test: torch.Tensor, num_classes: int, mean: list[float],
                     std: list[float], min_train: int = 1) -> None: ...
def ensure_writable_dir(dir: str, what: str) -> None: ...

class RoundResult:  # the fields of SWAMP_ROUND_FIELDS, in order (test_docs checks)
    round: int
    particles: int
    sparsity: float
    sparsity_all: float
    remaining: int
    prunable: int
    test_acc: float
    test_nll: float
    ensemble_acc: float
    ensemble_nll: float
    particle_acc: list[float]
    particle_nll: list[float]
    layer_density: list[tuple[str, float]]
    train_loss: float
    seconds: float
    test_ece: float
    ensemble_ece: float
    skipped_steps: int
    processes: int
    processes_per_particle: int
    def __init__(self) -> None: ...

def round_fields() -> list[dict[str, Any]]: ...

class Progress:
    round: int
    particle: int
    particles: int
    epoch: int
    epochs: int
    loss: float
    lr: float

class RunPlan:
    particles: list[int]
    swa: bool
    channels_last: bool
    precision: str
    device: str
    @property
    def max_particles(self) -> int: ...

class RoundModels:
    round: int
    particles: list[dict[str, torch.Tensor]]
    average: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]

class Hooks:
    on_round: Optional[Callable[[RoundResult], None]]
    on_epoch: Optional[Callable[[Progress], None]]
    on_ticket: Optional[Callable[[dict[str, torch.Tensor]], None]]
    on_models: Optional[Callable[[RoundModels], None]]
    models_with_particles: bool
    on_restore: Optional[Callable[[list[RoundResult]], None]]
    loss_sync_every: int
    def __init__(self) -> None: ...

class CheckpointOptions:
    dir: str
    every_epochs: int
    every_steps: int
    fresh: bool
    def __init__(self) -> None: ...

class RunResult:
    plan: RunPlan
    channels_last: bool
    rounds: list[RoundResult]
    masks: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]

class RunRequest:
    config: Config
    feeder: Any
    hooks: Hooks
    checkpoint: CheckpointOptions
    def __init__(self, config: Config, input_shape: list[int], num_classes: int,
                 model: Any = None) -> None: ...
    def set_tensors(self, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                    y_test: torch.Tensor, mean: list[float], std: list[float]) -> None: ...
    def set_processes(self, process_group: str, timeout_s: float,
                      subgroups: list[tuple[list[int], str]],
                      data_parallel: bool = True) -> None: ...
    def plan(self) -> RunPlan: ...
    def request_stop(self, signal: int) -> None: ...
    @property
    def stop_signal(self) -> int: ...

class StopRequested(Exception): ...

def run(request: RunRequest) -> RunResult: ...
def particles_per_round(config: Config) -> list[int]: ...
def data_parallel_groups(world: int, particles: int) -> list[list[int]]: ...

class _Io:
    @staticmethod
    def save_safetensors(path: str, tensors: dict[str, torch.Tensor],
                         metadata: dict[str, str] = ...) -> None: ...
    @staticmethod
    def load_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]: ...
    @staticmethod
    def load_checkpoint_tensors(path: str) -> dict[str, torch.Tensor]: ...
    @staticmethod
    def save_checkpoint_tensors(path: str, tensors: dict[str, torch.Tensor]) -> None: ...

io: _Io

class _Inference:
    @staticmethod
    def sparse_linear(input: torch.Tensor, crow_indices: torch.Tensor,
                      col_indices: torch.Tensor, values: torch.Tensor,
                      bias: Optional[torch.Tensor], in_features: int) -> torch.Tensor: ...
    @staticmethod
    def sparse_conv2d(input: torch.Tensor, crow_indices: torch.Tensor,
                      col_indices: torch.Tensor, values: torch.Tensor,
                      bias: Optional[torch.Tensor], weight_shape: list[int], stride: list[int],
                      padding: list[int]) -> torch.Tensor: ...

inference: _Inference

class _Overlap:  # analysis.Overlap
    kept_a: int
    kept_b: int
    intersection: int
    union: int
    total: int
    iou: float

class _Setup:  # analysis.Setup: a run's config, model and data
    def __init__(self, config: Config, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_test: torch.Tensor, y_test: torch.Tensor, num_classes: int,
                 mean: list[float], std: list[float], model: Any = None,
                 feeder: Any = None) -> None: ...

class _PathPoint:
    alpha: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float

class _LinearPath:
    points: list[_PathPoint]
    train_loss_barrier: float
    train_error_barrier: float
    test_loss_barrier: float
    test_error_barrier: float

class _HessianTrace:
    trace: float
    std_error: float
    samples: int
    converged: bool
    dimension: int

class _Scores:
    acc: float
    nll: float
    ece: float

class _EnsembleScores:
    members: list[_Scores]
    ensemble: _Scores

class _Analysis:
    Setup: type[_Setup]
    PathPoint: type[_PathPoint]
    LinearPath: type[_LinearPath]
    HessianTrace: type[_HessianTrace]
    Scores: type[_Scores]
    EnsembleScores: type[_EnsembleScores]
    Overlap: type[_Overlap]
    @staticmethod
    def linear_path(setup: _Setup, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                    points: int = 11, recompute_bn: bool = False, train: bool = True,
                    test: bool = True, train_samples: int = 0) -> _LinearPath: ...
    @staticmethod
    def hessian_trace(setup: _Setup, state: dict[str, torch.Tensor],
                      masks: dict[str, torch.Tensor], train_samples: int = 1000,
                      min_samples: int = 10, max_samples: int = 200, tolerance: float = 0.05,
                      block: int = 10, seed: int = 0) -> _HessianTrace: ...
    @staticmethod
    def ensemble_scores(setup: _Setup,
                        states: list[dict[str, torch.Tensor]]) -> _EnsembleScores: ...
    @staticmethod
    def mask_overlap(a: dict[str, torch.Tensor],
                     b: dict[str, torch.Tensor]) -> dict[str, _Overlap]: ...

analysis: _Analysis

class _Models:
    @staticmethod
    def names() -> list[str]: ...
    @staticmethod
    def has(name: str) -> bool: ...
    @staticmethod
    def train_throughput(name: str, input_shape: list[int], num_classes: int, batch_size: int,
                         steps: int, device: str = "cpu") -> float: ...
    @staticmethod
    def create(name: str, input_shape: list[int], num_classes: int,
               seed: int = 0) -> tuple[dict[str, torch.Tensor], list[str]]: ...
    @staticmethod
    def forward(name: str, input_shape: list[int], num_classes: int,
                state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor: ...
    @staticmethod
    def particle_path(name: str, input_shape: list[int], num_classes: int, particles: int,
                      mode: str = "auto", device: str = "cpu") -> str: ...
    @staticmethod
    def particle_lanes(particles: int) -> int: ...
    @staticmethod
    def lane_stack(name: str, input_shape: list[int], num_classes: int, particles: int) -> int: ...
    @staticmethod
    def train_step_seconds(name: str, input_shape: list[int], num_classes: int,
                           batch_size: int = 128, particles: int = 1, stacked: bool = True,
                           sparsity: float = 0.0, sparse_kernels: str = "off",
                           sparse_density: float = 0.5, steps: int = 20, repeats: int = 5,
                           device: str = "cpu", threads: bool = False) -> float: ...

models: _Models

# Test seams (see swamp_ext.testing); not used by runs.
class _Testing:
    @staticmethod
    def reseal_checkpoint(path: str) -> None: ...
    @staticmethod
    def crash_in_checkpoint_write(nth: int, exit_code: int = 86) -> None: ...
    @staticmethod
    def lanes_probe(lanes: int, fail_lane: int = -1) -> list[tuple[int, int, bool, int]]: ...
    @staticmethod
    def particles_forward_backward(
        name: str, input_shape: list[int], num_classes: int,
        states: list[dict[str, torch.Tensor]], x: torch.Tensor, y: torch.Tensor, stacked: bool,
        masks: dict[str, torch.Tensor] = ..., sparse_kernels: str = "off",
        channels_last: bool = False,
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]: ...
    @staticmethod
    def conv2d_forward(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                       channels_last: bool) -> torch.Tensor: ...

testing: _Testing
