"""Frozen, validated configuration dataclasses and their JSON round trip (`to_dict`, `from_dict`).

Every experiment is a `TrainConfig`. The named presets live in nlcore.config.presets and the
`--set key=value` overrides in nlcore.config.overrides; both are re-exported here, so
`from nlcore.config import preset, apply_overrides, TrainConfig` keeps working.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw", "delta", "delta_batch_mean", "none")


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {msg}")


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "wikitext2"  # wikitext2 | tinyshakespeare | synthetic | a folder path
    data_root: str | None = None  # else $NLCORE_DATA, else ../shared/data
    batch_size: int = 32  # B contiguous rows
    seq_len: int = 256  # T characters per window
    eval_batch_size: int | None = None  # None: same as batch_size
    synth_seed: int = 0  # synthetic corpus only
    synth_chars: int = 200_000  # synthetic train characters (valid/test get a tenth each)
    synth_gap_min: int = 48
    synth_gap_max: int = 96

    def validate(self, prefix: str = "data") -> None:
        _check(self.batch_size >= 1, f"{prefix}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.seq_len >= 2, f"{prefix}.seq_len", f"window must be >= 2, got {self.seq_len}")
        _check(self.eval_batch_size is None or self.eval_batch_size >= 1,
               f"{prefix}.eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        _check(self.synth_chars >= 1000, f"{prefix}.synth_chars", "must be >= 1000")
        _check(1 <= self.synth_gap_min <= self.synth_gap_max, f"{prefix}.synth_gap_min",
               "need 1 <= synth_gap_min <= synth_gap_max")


MODEL_KINDS = ("nested_lstm", "lstm_lm", "transformer", "titans", "hope")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "nested_lstm"  # nested_lstm | lstm_lm | transformer | titans | hope
    d_model: int = 256
    d_ff: int = 512
    norm_residual: bool = True  # LayerNorm + residual around the FFN levels (the prototype's "Tier 4")
    activation: str = "gelu"  # gelu | relu
    dropout: float = 0.0
    embed_level: str = "fast"  # the CMS level that owns the embedding
    head_level: str = "fast"  # the CMS level that owns the output head
    zero_init_ffn_out: bool = False  # True: residual FFN branches start as the identity map
    hierarchical_state: bool = False  # carry slow-level summaries across windows (nlcore.state)
    # transformer / titans / hope (nlcore.models.transformer, .titans, .hope)
    n_layers: int = 4
    n_heads: int = 4
    memory: str = "mlp"  # titans: mlp (2-layer residual MLP memory) | linear
    mem_hidden: int = 2  # MLP memory hidden width, as a multiple of the head width
    mem_chunk: int = 64  # tokens per chunk of the chunk-parallel memory path (HOPE: also the
    #                      chunk whose start state generates the self-modifying keys and values)
    mem_impl: str = "chunk"  # chunk (parallel) | token (the token-by-token reference)
    momentum: bool = True  # memories: Titans-style momentum S_t with a data-dependent decay
    mem_alpha0: float = 0.982  # memories: the retention gate alpha_t at initialisation (sigmoid bias)
    mem_retention: str = "zero"  # titans: retention pulls the memory toward zero | its initial weights (init)
    mem_step_max: float = 0.0  # titans, MLP memory: ceiling of the write step eta_t (0: 1/mem_chunk)
    mem_normalize: bool = False  # titans, MLP memory: each token's gradient divided by its curvature bound
    # titans, MLP memory: at each chunk's end its distance from the anchor, |θ − θ_a| over W1 and W2,
    # at most this multiple of the initial weights' norm (per head; momenta scaled alike); 0: no cap
    mem_state_max: float = 0.0
    # titans, MLP memory: the backward pass through the carried state crosses at most this many
    # chunk writes (truncated backprop; the forward values do not change); 0: all of them
    mem_grad_chunks: int = 0
    cms_mode: str = "in_forward"  # hope: in_forward (per-row MLP writes every C tokens) | outer (nlcore.cms)
    cms_chunks: str = "64,256"  # hope: chunk sizes in tokens of the CMS chain's MLPs, fast to slow
    cms_lr: float = 1e-3  # hope, in_forward: step size of the MLP writes (on the chunk's summed gradient)
    cms_teach: str = "global"  # hope, in_forward: the loss of the writes: the model's (global) | each layer's own (layer)

    def chunk_list(self) -> tuple[int, ...]:
        try:
            return tuple(int(c) for c in self.cms_chunks.split(",") if c.strip())
        except ValueError:
            raise ValueError(f"model.cms_chunks: expected comma-separated ints, got {self.cms_chunks!r}") from None

    def validate(self, prefix: str = "model") -> None:
        _check(self.kind in MODEL_KINDS, f"{prefix}.kind", f"unknown model {self.kind!r}; kinds are {MODEL_KINDS}")
        _check(self.d_model >= 1, f"{prefix}.d_model", f"must be >= 1, got {self.d_model}")
        _check(self.d_ff >= 1, f"{prefix}.d_ff", f"must be >= 1, got {self.d_ff}")
        _check(self.activation in ("gelu", "relu"), f"{prefix}.activation", f"got {self.activation!r}")
        _check(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.n_layers >= 1, f"{prefix}.n_layers", f"must be >= 1, got {self.n_layers}")
        _check(self.n_heads >= 1 and self.d_model % self.n_heads == 0, f"{prefix}.n_heads",
               f"must divide d_model={self.d_model}, got {self.n_heads}")
        _check(self.memory in ("mlp", "linear"), f"{prefix}.memory", f"must be 'mlp' or 'linear', got {self.memory!r}")
        _check(self.mem_hidden >= 1, f"{prefix}.mem_hidden", f"must be >= 1, got {self.mem_hidden}")
        _check(self.mem_chunk >= 1, f"{prefix}.mem_chunk", f"must be >= 1, got {self.mem_chunk}")
        _check(0.0 < self.mem_alpha0 < 1.0, f"{prefix}.mem_alpha0", f"must be in (0, 1), got {self.mem_alpha0}")
        _check(self.mem_state_max >= 0.0 and math.isfinite(self.mem_state_max), f"{prefix}.mem_state_max",
               f"must be a finite number >= 0 (0: no cap), got {self.mem_state_max}")
        _check(isinstance(self.mem_grad_chunks, int) and not isinstance(self.mem_grad_chunks, bool)
               and self.mem_grad_chunks >= 0, f"{prefix}.mem_grad_chunks",
               f"must be an int >= 0 (0: the full backward pass), got {self.mem_grad_chunks!r}")
        _check(self.mem_grad_chunks == 0 or (self.kind == "titans" and self.memory == "mlp"), f"{prefix}.mem_grad_chunks",
               f"applies to the Titans MLP memory only (model.kind=titans, model.memory=mlp), got "
               f"kind={self.kind!r}, memory={self.memory!r}")
        _check(self.mem_step_max >= 0.0, f"{prefix}.mem_step_max", f"must be >= 0 (0: 1/mem_chunk), got {self.mem_step_max}")
        _check(self.mem_retention in ("zero", "init"), f"{prefix}.mem_retention",
               f"must be 'zero' or 'init', got {self.mem_retention!r}")
        _check(self.mem_impl in ("chunk", "token"), f"{prefix}.mem_impl", f"must be 'chunk' or 'token', got {self.mem_impl!r}")
        _check(self.cms_mode in ("in_forward", "outer"), f"{prefix}.cms_mode",
               f"must be 'in_forward' or 'outer', got {self.cms_mode!r}")
        chunks = self.chunk_list()
        _check(len(chunks) >= 1 and all(c >= 1 for c in chunks), f"{prefix}.cms_chunks",
               f"need at least one chunk size >= 1, got {self.cms_chunks!r}")
        _check(list(chunks) == sorted(chunks), f"{prefix}.cms_chunks", f"must be fast to slow (ascending), got {chunks}")
        _check(self.cms_lr >= 0.0, f"{prefix}.cms_lr", f"must be >= 0, got {self.cms_lr}")
        _check(self.cms_teach in ("global", "layer"), f"{prefix}.cms_teach",
               f"must be 'global' or 'layer', got {self.cms_teach!r}")
        _check(self.kind != "hope" or self.cms_mode != "in_forward" or chunks[0] % self.mem_chunk == 0,
               f"{prefix}.cms_chunks", f"the fastest chunk {chunks[0]} must be a multiple of "
               f"model.mem_chunk={self.mem_chunk}")


@dataclass(frozen=True)
class LevelConfig:
    name: str
    chunk: int = 1  # C: the level applies C accumulated gradients at steps C, 2C, ... (1-based)
    optimizer: str = "adamw"  # sgd | adam | adamw | delta | delta_batch_mean | none (frozen, compat only)
    lr: float = 3e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only

    def validate(self, prefix: str = "cms.levels") -> None:
        p = f"{prefix}.{self.name}"
        _check(bool(self.name) and self.name.isidentifier(), f"{p}.name", "must be an identifier")
        _check(self.chunk >= 1, f"{p}.chunk", f"chunk size must be >= 1, got {self.chunk}")
        _check(self.optimizer in OPTIMIZERS, f"{p}.optimizer", f"must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _check(self.lr >= 0.0, f"{p}.lr", f"learning rate must be >= 0, got {self.lr}")
        _check(self.weight_decay >= 0.0, f"{p}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, f"{p}.beta1/beta2", "must be in [0, 1)")
        _check(self.eps > 0.0, f"{p}.eps", "must be > 0")
        _check(0.0 <= self.momentum < 1.0, f"{p}.momentum", "must be in [0, 1)")


# The default CMS policy for the prototype's chunks 1/16/256, chosen by the sweeps in
# scripts/reproduce/tune_seed*.sh (results/seed_tuning/): AdamW on the fast level; on the FFN levels
# the paper's Eq. 31 literally, a plain gradient step (with momentum) on the SUM of the chunk's
# gradients, clipped per level (results/seed_tuning/README.md compares it with Adam and with lr/C).
SEED_LEVELS = (
    LevelConfig("fast", chunk=1, optimizer="adamw", lr=5e-3),
    LevelConfig("medium", chunk=16, optimizer="sgd", lr=2.0, momentum=0.9),
    LevelConfig("slow", chunk=256, optimizer="sgd", lr=2.0, momentum=0.9),
)


@dataclass(frozen=True)
class CMSConfig:
    levels: tuple[LevelConfig, ...] = SEED_LEVELS
    aggregation: str = "sum"  # sum (the paper's Eq. 31) | mean
    lr_policy: str = "none"  # none | divide_by_chunk (the prototype's lr/C; froze its slow levels under Adam)
    partial: str = "flush"  # what a final partial chunk does: flush (apply it) | discard
    grad_clip: float = 0.25  # per level, on the aggregated gradient; 0 disables

    def validate(self, prefix: str = "cms") -> None:
        _check(len(self.levels) >= 1, f"{prefix}.levels", "need at least one level")
        names = [lv.name for lv in self.levels]
        _check(len(set(names)) == len(names), f"{prefix}.levels", f"duplicate level names {names}")
        for lv in self.levels:
            lv.validate(f"{prefix}.levels")
        _check(self.aggregation in ("sum", "mean"), f"{prefix}.aggregation", f"got {self.aggregation!r}")
        _check(self.lr_policy in ("none", "divide_by_chunk"), f"{prefix}.lr_policy", f"got {self.lr_policy!r}")
        _check(self.partial in ("flush", "discard"), f"{prefix}.partial", f"got {self.partial!r}")
        _check(self.grad_clip >= 0.0, f"{prefix}.grad_clip", f"must be >= 0, got {self.grad_clip}")

    def level(self, name: str) -> LevelConfig:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(f"cms.levels: unknown level {name!r}; levels are {[lv.name for lv in self.levels]}")


@dataclass(frozen=True)
class StateConfig:
    reset: str = "never"  # every_batch | never | doc | every_n
    reset_every: int = 0  # for every_n: zero the state every N windows

    def validate(self, prefix: str = "state") -> None:
        _check(self.reset in ("every_batch", "never", "doc", "every_n"), f"{prefix}.reset", f"got {self.reset!r}")
        _check(self.reset != "every_n" or self.reset_every >= 1, f"{prefix}.reset_every",
               "must be >= 1 when reset=every_n")


@dataclass(frozen=True)
class SurpriseConfig:
    weights: dict[str, float] = field(default_factory=dict)  # level name -> lambda_l
    clip: float = 10.0  # c in clip(grad_y L, +-c)
    impl: str = "hooks"  # hooks (one backward pass) | reference (autograd.grad, the literal form)
    every: int = 1  # compute the auxiliary loss every n steps

    def validate(self, prefix: str = "surprise") -> None:
        for k, w in self.weights.items():
            _check(w >= 0.0, f"{prefix}.weights.{k}", f"must be >= 0, got {w}")
        _check(self.clip > 0.0, f"{prefix}.clip", f"must be > 0, got {self.clip}")
        _check(self.impl in ("hooks", "reference"), f"{prefix}.impl",
               f"must be 'hooks' or 'reference', got {self.impl!r}")
        _check(self.every >= 1, f"{prefix}.every", f"must be >= 1, got {self.every}")


@dataclass(frozen=True)
class TrainConfig:
    name: str = "seed"
    seed: int = 0
    steps: int = 2000
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cms: CMSConfig = field(default_factory=CMSConfig)
    state: StateConfig = field(default_factory=StateConfig)
    surprise: SurpriseConfig = field(default_factory=SurpriseConfig)
    schedule: str = "cosine"  # constant | cosine (linear warm-up, then cosine to min_lr_ratio)
    warmup: int = 200
    min_lr_ratio: float = 0.0
    eval_every: int = 500  # steps between valid evaluations (0: only at the end)
    eval_windows: int = 40  # windows of valid used at intermediate evaluations (final one: whole split)
    log_every: int = 50
    ckpt_every: int = 500  # 0: only at the end
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    deterministic: bool = False
    compat: str = "none"  # none | prototype (its untrained embedding/head and lr/C; never a default)
    # cuda_graph (nlcore.accel.cuda_graph): "on" replays forward + loss + backward from a CUDA graph
    # over static input, state and .grad buffers, and each evaluation window's forward and losses;
    # windows it cannot replay (document resets inside, another shape) run eagerly and are counted.
    # On a CPU "on" runs the same static-buffer code with the capture emulated, bit-identical to
    # "off". Not with the delta optimizers (their statistics come from host-side hooks). "auto":
    # "on" on CUDA unless a level uses a delta optimizer.
    cuda_graph: str = "auto"  # auto | off | on
    # compile (nlcore.accel.compile): torch.compile the loss and the model's marked parts (for the
    # nested LSTM, everything after the recurrence). "auto": "inductor" on CUDA, "off" elsewhere;
    # "aot_eager" traces without code generation (the CPU tests). Not with the delta optimizers.
    compile: str = "auto"  # auto | off | inductor | aot_eager
    # dynamic evaluation (nlcore.training.dynamic_eval) at the final evaluation: after scoring each
    # held-out window, one SGD step of size dynamic_eval_lr on its loss, pulled back toward the
    # trained weights by dynamic_eval_decay; reported as valid/test_bpc_dynamic beside the static numbers.
    dynamic_eval_lr: float = 0.0  # 0: off
    dynamic_eval_decay: float = 0.0  # in [0, 1); 0: plain SGD dynamic evaluation

    def validate(self) -> TrainConfig:
        for name, value in _floats(self):
            _check(math.isfinite(value), name, f"must be a finite number, got {value}")
        _check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.warmup >= 0, "warmup", f"must be >= 0, got {self.warmup}")
        _check(self.schedule in ("constant", "cosine"), "schedule", f"got {self.schedule!r}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]")
        for name in ("eval_every", "ckpt_every"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        _check(self.log_every >= 1, "log_every", "must be >= 1")
        _check(self.eval_windows >= 1, "eval_windows", "must be >= 1")
        _check(self.amp in ("auto", "bf16", "off"), "amp", f"got {self.amp!r}")
        _check(self.compat in ("none", "prototype"), "compat", f"got {self.compat!r}")
        _check(self.cuda_graph in ("auto", "off", "on"), "cuda_graph",
               f"must be 'auto', 'off' or 'on', got {self.cuda_graph!r}")
        _check(self.compile in ("auto", "off", "inductor", "aot_eager"), "compile",
               f"must be 'auto', 'off', 'inductor' or 'aot_eager', got {self.compile!r}")
        _check(self.dynamic_eval_lr >= 0.0, "dynamic_eval_lr", f"must be >= 0 (0: off), got {self.dynamic_eval_lr}")
        _check(0.0 <= self.dynamic_eval_decay < 1.0, "dynamic_eval_decay",
               f"must be in [0, 1), got {self.dynamic_eval_decay}")
        self.data.validate()
        self.model.validate()
        self.cms.validate()
        self.state.validate()
        self.surprise.validate()
        names = {lv.name for lv in self.cms.levels}
        for attr in ("embed_level", "head_level"):
            lv = getattr(self.model, attr)
            _check(lv in names, f"model.{attr}", f"unknown level {lv!r}; levels are {sorted(names)}")
        for k in self.surprise.weights:
            _check(k in names, f"surprise.weights.{k}", f"unknown level {k!r}; levels are {sorted(names)}")
        delta = [lv.name for lv in self.cms.levels if lv.optimizer in ("delta", "delta_batch_mean")]
        _check(self.cuda_graph != "on" or not delta, "cuda_graph",
               f"the CUDA-graph step cannot run the delta optimizers (levels {delta}): set cuda_graph=off")
        _check(self.compile in ("auto", "off") or not delta, "compile",
               f"the delta optimizers' module hooks cannot be compiled (levels {delta}): set compile=off")
        return self



def _floats(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted name, value) of every float field, levels by name, surprise weights by level."""
    out = []
    for f in dataclasses.fields(obj):
        v, name = getattr(obj, f.name), f"{prefix}{f.name}"
        if isinstance(v, float):
            out.append((name, v))
        elif dataclasses.is_dataclass(v):
            out += _floats(v, name + ".")
        elif isinstance(v, tuple):
            for lv in v:
                out += _floats(lv, f"{name}.{lv.name}.")
        elif isinstance(v, dict):
            out += [(f"{name}.{k}", w) for k, w in v.items() if isinstance(w, float)]
    return out


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of the whole config (for meta.json)."""
    return dataclasses.asdict(cfg)


# Configs written by older revisions (committed meta.json files, their checkpoints) name some
# fields and values differently: (section or "", old field) -> (new field, {old value: new value}).
LEGACY = {("", "fast_path"): ("cuda_graph", {"graph": "on"}), ("surprise", "impl"): ("impl", {"fast": "hooks"})}


def _upgrade(d: dict, section: str) -> dict:
    d = dict(d)
    for (sec, old), (new, values) in LEGACY.items():
        if sec == section and old in d:
            v = d.pop(old)
            d[new] = values.get(v, v) if isinstance(v, str) else v
    return d


def from_dict(d: dict) -> TrainConfig:
    """Inverse of `to_dict` (checkpoints and resumed runs); accepts the LEGACY names."""
    d = _upgrade(d, "")
    d["data"] = DataConfig(**d["data"])
    d["model"] = ModelConfig(**d["model"])
    cms = dict(d["cms"])
    cms["levels"] = tuple(LevelConfig(**lv) for lv in cms["levels"])
    d["cms"] = CMSConfig(**cms)
    d["state"] = StateConfig(**d["state"])
    d["surprise"] = SurpriseConfig(**_upgrade(d["surprise"], "surprise"))
    return TrainConfig(**d).validate()
