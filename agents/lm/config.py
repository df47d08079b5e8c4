"""The config of ``mnemo lm train``: typed sections whose field docstrings are the help text.

The core, run and device/seed/threads parts are the shared ones of agents/config_sections.py.

Load with ``load_lm_config(path, overrides)``; unknown keys, wrong types and unknown core names
or options fail in one line before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mnemo.agents.config_loader import ConfigError, load_config
from mnemo.agents.config_sections import CoreSection, MachineSection, RunSection
from mnemo.agents.memory_budget import build_on_meta, check_memory, state_bytes, training_bytes

MAX_SYNTHETIC_BYTES = 2**30
DATA_CHOICES = (
    "a text file, a folder of .txt books, a PG-19 root (train/ validation/ test/), "
    "synthetic:recall or synthetic:needle"
)


@dataclass
class SyntheticConfig:
    """Options of the built-in ``synthetic:recall`` and ``synthetic:needle`` sets."""

    docs: int = 2000
    """Training documents of ``synthetic:recall``."""
    val_docs: int = 200
    """Validation documents of ``synthetic:recall``."""
    gap_min: int = 20
    """Fewest filler bytes between a fact and its recall."""
    gap_max: int = 60
    """Most filler bytes between a fact and its recall."""
    code_len: int = 3
    """Uppercase letters per code (the recalled bytes)."""
    facts: int = 1
    """Facts per story; with more than one, each code must be bound to its name."""
    rounds: int = 1
    """Fact-and-recall rounds per story: more rounds make longer documents (fewer resets)."""
    lead_max: int = 20
    """Most filler bytes before the first fact of a story."""
    compact: bool = False
    """Terse facts: ``[QXW]`` ... ``<QXW>`` instead of sentences with names (names kept when
    ``facts > 1``); a tiny LSTM finds the recall in far fewer steps."""
    distances: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384])
    """Recall distances of ``synthetic:needle``."""
    docs_per_distance: int = 4
    """``synthetic:needle`` documents per distance."""
    seed: int = 0
    """Seed of the generated documents (each split derives its own from it)."""

    def validate(self) -> None:
        if self.docs < 1 or self.val_docs < 1 or self.docs_per_distance < 1:
            raise ConfigError("data.synthetic.docs, val_docs and docs_per_distance must be >= 1")
        if not 0 <= self.gap_min <= self.gap_max:
            raise ConfigError(
                f"data.synthetic: need 0 <= gap_min <= gap_max, got {self.gap_min}, {self.gap_max}"
            )
        for name in ("code_len", "facts", "rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.synthetic.{name} must be >= 1, got {getattr(self, name)}")
        if self.lead_max < 0 or not self.distances or any(d < 1 for d in self.distances):
            raise ConfigError(
                f"data.synthetic: lead_max must be >= 0 and distances a list of at least one "
                f"distance >= 1, got {self.lead_max} and {self.distances}"
            )
        # Generated in memory: refuse sizes that would take hours or all of RAM, up front.
        story = self.lead_max + self.rounds * self.facts * (self.gap_max + 40 + 2 * self.code_len)
        needle = max(self.distances) * self.docs_per_distance * len(self.distances)
        est = max((self.docs + self.val_docs) * story, needle)
        if est > MAX_SYNTHETIC_BYTES:
            raise ConfigError(
                f"data.synthetic would generate ~{est:.3g} bytes; at most "
                f"{MAX_SYNTHETIC_BYTES:.3g} (lower docs, rounds, facts, gap_max, distances or "
                "docs_per_distance)"
            )


@dataclass
class DataConfig:
    path: str = "synthetic:recall"
    """A text file, a folder of .txt books, a PG-19 root (train/ validation/ test/), or
    ``synthetic:recall`` / ``synthetic:needle``."""
    val_path: str | None = None
    """Validation data; default: a PG-19 root's validation/, a synthetic set's validation seed,
    else the last ``val_fraction`` of the training bytes."""
    val_fraction: float = 0.05
    """Share of a plain file or flat folder held out for validation."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self) -> None:
        for key, value in (("path", self.path), ("val_path", self.val_path)):
            if value is not None and not value.strip():  # Path("") is ".": the cwd's .txt files
                raise ConfigError(f"data.{key} is empty; give {DATA_CHOICES}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass
class CoreConfig(CoreSection):
    """The shared ``core:`` section, wider by default: bytes need more room than observations."""

    d_model: int = 128
    """Width of the byte embedding and the core."""


@dataclass
class TrainSection:
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 32
    """Parallel streams B through the concatenated documents."""
    segment_len: int = 128
    """Bytes per segment T (one core call)."""
    detach_every: int = 1
    """Segments per optimizer step: the state is detached after every k segments (truncated
    BPTT over k*T bytes); the memory itself is carried on across all segments."""
    lr: float = 2e-3
    """Peak AdamW learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine decay ends at ``lr * min_lr_ratio``."""
    warmup_steps: int = 100
    """Linear warm-up steps; more than train.steps is allowed: the learning rate then peaks at
    lr x steps / warmup_steps, as the longer run a --resume with more train.steps continues."""
    weight_decay: float = 0.01
    """AdamW weight decay of the weight matrices (biases and norm gains have none)."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0 = off)."""
    aux_coef: float = 1.0
    """Weight of the core's aux_loss."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    eval_every: int = 200
    """Validation every N steps (and at the end)."""
    eval_bytes: int = 200_000
    """Validation bytes per evaluation during training (whole documents first)."""
    sample_every: int = 0
    """Write a text sample to TensorBoard every N steps (0 = only at the end)."""
    sample_bytes: int = 200
    """Bytes per text sample (0 = no samples)."""

    def validate(self) -> None:
        for name in ("steps", "batch_size", "segment_len", "detach_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.sample_every < 0:
            raise ConfigError("train.warmup_steps, grad_clip and sample_every must be >= 0")
        # Each was taken as given: eval_bytes=0 logged a validation of 0 bits per byte, a
        # negative sample_bytes no sample, min_lr_ratio=5 a schedule that rose to 5 x lr.
        if self.eval_bytes < 1:
            raise ConfigError(f"train.eval_bytes must be >= 1, got {self.eval_bytes}")
        for name in ("sample_bytes", "weight_decay", "aux_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class RunConfig(RunSection):
    """The shared ``run:`` section; an LM logs and checkpoints less often (its steps are many)."""

    dir: str | None = None
    """Output folder; default ``runs/lm-<core>-<time>``."""
    log_every: int = 20
    """Write training scalars every N steps."""
    checkpoint_every: int = 500
    """Write checkpoints/last.pt every N steps (and at the end)."""
    print_every: int = 100
    """Print a report (steps, bits per byte, tokens/s) every N steps and at the end; 0 = never
    (quiet)."""


@dataclass
class LMConfig(MachineSection):
    data: DataConfig = field(default_factory=DataConfig)
    core: CoreConfig = field(default_factory=CoreConfig)
    train: TrainSection = field(default_factory=TrainSection)
    run: RunConfig = field(default_factory=RunConfig)


def check_core(name: str, options: dict) -> None:
    """Fail in one line on an unknown core name or option, or an option's bad value."""
    from mnemo import memory

    try:
        memory.validate_core(name, options)
    except memory.CoreConfigError as e:
        raise ConfigError(str(e)) from e


def load_lm_config(path: str | None, overrides: list[str] | None = None) -> LMConfig:
    """Load an LMConfig from YAML (or defaults) plus ``key.sub=value`` overrides."""
    cfg = load_config(LMConfig, path, overrides)
    check_core(cfg.core.name, cfg.core.options)
    check_run_memory(cfg)
    check_data_memory(cfg)
    return cfg


LOAD_BYTES_PER_BYTE = 4
"""Peak memory while text loads, per byte on disk: the files read, the corpus's bytes and
document-start flags, the training streams' flags (100 MB of text took 388 MB)."""


def check_data_memory(cfg: LMConfig) -> float:
    """Refuse, from the files' sizes and before reading them, text that would not fit in half
    of this machine's RAM as it loads (a PG-19 train/ is ~11 GB: ~44 GB); returns bytes."""
    from mnemo.agents.lm.data import is_pg19_root, text_size

    d = cfg.data
    size = text_size(d.path, "train")
    if d.val_path is not None:
        size += text_size(d.val_path, "validation")
    elif not d.path.startswith("synthetic:") and is_pg19_root(Path(d.path).expanduser()):
        size += text_size(d.path, "validation")
    parts = {"text data as it loads": LOAD_BYTES_PER_BYTE * size}
    return check_memory(parts, "data.path (less text)", "cpu", cfg.memory_check)


def check_run_memory(cfg: LMConfig) -> float:
    """Estimate the run's memory from its sizes, before anything is allocated, and refuse
    what would not fit (agents/memory_budget.py). Returns the estimate in bytes.

    The model is built on the meta device. Activations are a floor: the embedding, core and
    256-way logits of every byte of one optimizer step (``detach_every`` segments are
    backpropagated together), and the core state each stream carries.
    """
    from mnemo.agents.lm.model import build_model

    model = build_on_meta(
        lambda: build_model(cfg.core.name, cfg.core.d_model, cfg.core.options),
        f"the {cfg.core.name!r} language model",
    )
    t = cfg.train
    state = state_bytes(model.core)
    step_bytes = t.batch_size * t.segment_len * t.detach_every
    parts = {
        "weights, gradients and Adam's moments": training_bytes(model),
        "core states": 3 * t.batch_size * state,
        "activations": step_bytes * 4 * (16 * cfg.core.d_model + 3 * 256),
    }
    keys = (
        "train.batch_size, train.segment_len, train.detach_every, core.d_model or the core's sizes"
    )
    return check_memory(parts, keys, cfg.device, cfg.memory_check)
