"""The training loop: a LeRobot v3.0 dataset -> a Wall-OSS checkpoint that `infer`, `eval` and the policy node load.

Output directory:
  checkpoint/       a complete checkpoint (config.json with the dataset's cameras, names and image size,
                    model.safetensors — LoRA merged —, tokenizer files, normalizer pipelines with the dataset's
                    q01/q99); written first from the initial weights, so training runs the exact inference
                    preprocessing (`WallOssPipeline`) of the checkpoint it produces
  adapter/          LoRA only: peft adapter_config.json + adapter_model.safetensors
  base/             LoRA only: the initial checkpoint the adapters apply to
  state/            what resuming needs: trainable weights, optimizer, scheduler, RNG states, step
  train_log.jsonl   one line per step: step, loss, lr
  training_curve.png the loss (and its running mean) and the lr over the steps so far
The optimizer and schedule follow the Wall-OSS-0.5 configuration: AdamW (betas 0.9/0.95, eps 1e-8, weight decay
1e-8), linear warmup then cosine decay to `min_lr`, gradient norm clipped to 1.0.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from wall_oss_core.model.checkpoint_generator import CHUNK_SIZE, generate_checkpoint, write_normalizer_pipelines
from wall_oss_core.model.configuration import WallOssConfig
from wall_oss_core.model.normalization import ACTION_KEY, QUANTILES, STATE_KEY
from wall_oss_core.model.pipeline import WallOssPipeline
from wall_oss_core.training.dataset import TrainingDataset
from wall_oss_core.training.objective import FlowTimeSampler, flow_loss

LORA_TARGETS = (r"model\.layers\.\d+\.(self_attn\.(qkv_proj_experts\.\d+|o_proj_experts\.\d+|[qkvo]_proj)"
                r"|moe\.experts\.\d+\.(gate_up_proj|gate_proj|up_proj|down_proj))")


class TrainingError(ValueError):
    """Training options or inputs that cannot work (the message says why)."""


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    out: str
    init: str | None = None  # checkpoint directory to fine-tune
    size: str | None = None  # or a fresh random model of this generated size ("tiny", "small")
    steps: int = 1000
    batch_size: int = 8
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-8
    warmup_steps: int | None = None  # None: 5% of the steps, at most 1000
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    dtype: str = "float32"  # autocast dtype; weights and optimizer stay fp32
    device: str = "cpu"
    lora_rank: int = 0
    seed: int = 0
    image_size: int | None = None  # longest image side; None: the checkpoint's (448 for 0.5)
    resume: str | None = None  # a previous run's output directory
    stop_at: int | None = None  # stop after this step with a resumable state (split a run across sessions)
    progress: bool = True

    def __post_init__(self):
        if (self.init is None) == (self.size is None) and self.resume is None:
            raise TrainingError("give exactly one of --init CHECKPOINT_DIR or --config SIZE (or --resume)")
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0 or self.lora_rank < 0:
            raise TrainingError("steps and batch size must be >= 1, lr > 0, lora rank >= 0")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, min(1000, self.steps // 20))


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based): linear warmup, then cosine to min_lr."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    floor = config.min_lr / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def prepare_checkpoint(directory: Path, config: TrainConfig, dataset: TrainingDataset) -> None:
    """The initial checkpoint, configured for the dataset (cameras, names, statistics, image size)."""
    directory.mkdir(parents=True, exist_ok=True)
    if config.size is not None:
        generate_checkpoint(directory, size=config.size, seed=config.seed)
    else:
        for path in Path(config.init).iterdir():
            if path.is_file() and not path.name.startswith("policy_"):
                shutil.copy2(path, directory / path.name)
    model_config = WallOssConfig.from_checkpoint_dir(directory)
    state_dim, action_dim = dataset.states.shape[1], dataset.actions.shape[2]
    if state_dim > model_config.action.state_dim or action_dim > model_config.action.action_dim:
        raise TrainingError(f"dataset state/action widths {state_dim}/{action_dim} exceed the model's "
                            f"{model_config.action.state_dim}/{model_config.action.action_dim}")
    height, width, _ = dataset.images[dataset.cameras[0]].shape[1:]
    inputs = {STATE_KEY: {"type": "STATE", "shape": [state_dim]}}
    inputs.update({f"observation.images.{c}": {"type": "VISUAL", "shape": [3, height, width]} for c in dataset.cameras})
    outputs = {ACTION_KEY: {"type": "ACTION", "shape": [action_dim]}}
    fields = dict(model_config.policy_fields)
    fields.update(input_features=inputs, output_features=outputs,
                  normalization_mapping={"VISUAL": "IDENTITY", "STATE": QUANTILES, "ACTION": QUANTILES},
                  state_names=dataset.state_names, action_names=dataset.action_names, dataset_fps=dataset.fps)
    if config.image_size is not None:
        fields["image_longest_side"] = config.image_size
    model_config = dataclasses.replace(
        model_config, policy_fields=fields,
        camera_key_mapping={f"observation.images.{c}": c for c in dataset.cameras})
    (directory / "config.json").write_text(json.dumps(model_config.to_json_dict(), indent=2))
    write_normalizer_pipelines(directory, inputs, outputs, QUANTILES,
                               {STATE_KEY: dataset.state_statistics(), ACTION_KEY: dataset.action_statistics()})


def add_lora(model: torch.nn.Module, rank: int):
    """Inject LoRA adapters (peft) into the decoder experts' attention and MLP projections; only they train."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS)
    inject_adapter_in_model(lora, model)
    return lora


def save_adapter(model: torch.nn.Module, lora, directory: Path) -> None:
    from peft import get_peft_model_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    lora.save_pretrained(str(directory))
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()},
              str(directory / "adapter_model.safetensors"))


def load_adapter(model: torch.nn.Module, directory: Path):
    """Inject the adapters saved in `directory` into `model` and load their weights."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    lora = LoraConfig.from_pretrained(str(directory))
    inject_adapter_in_model(lora, model)
    result = set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
    if result.unexpected_keys:
        raise TrainingError(f"{directory}: adapter tensors the model does not have: {result.unexpected_keys}")
    return lora


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights in checkpoint key names, LoRA deltas added to their base weights (model untouched)."""
    from peft.tuners.lora import LoraLayer

    deltas = {f"{name}.weight": module.get_delta_weight("default")
              for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    state = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = (value + deltas[key].to(value.dtype)) if key in deltas else value
    return state


def save_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    state = {k: v.detach().float().cpu().contiguous() for k, v in merged_state_dict(model).items()}
    save_file(state, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})


def write_training_curve(log_path: Path, png_path: Path, window: int = 50) -> Path:
    """Loss per step with its running mean (log scale) and the lr, from train_log.jsonl (all segments of a
    resumed run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    steps = np.array([r["step"] for r in rows])
    losses = np.array([r["loss"] for r in rows])
    mean = np.convolve(losses, np.ones(min(window, len(losses))) / min(window, len(losses)), mode="valid")
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=(3, 1))
    top.semilogy(steps, losses, color="#bbbbbb", linewidth=0.6, label="loss")
    top.semilogy(steps[len(steps) - len(mean):], mean, color="#1f77b4", label=f"mean of {min(window, len(losses))}")
    top.set_ylabel("flow loss (action space)")
    top.legend()
    bottom.plot(steps, [r["lr"] for r in rows], color="#d62728")
    bottom.set_ylabel("lr")
    bottom.set_xlabel("step")
    figure.tight_layout()
    figure.savefig(png_path, dpi=90)
    plt.close(figure)
    return png_path


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.out = Path(config.out)
        self.checkpoint = self.out / "checkpoint"
        source = Path(config.resume) if config.resume else None
        if source is not None and not (source / "state" / "trainer.pt").is_file():
            raise TrainingError(f"{source} holds no resumable state (state/trainer.pt)")
        self.device = torch.device(config.device)
        config_dir = source / "checkpoint" if source else (Path(config.init) if config.init else None)
        chunk = WallOssConfig.from_checkpoint_dir(config_dir).action.chunk_size if config_dir else CHUNK_SIZE
        self.dataset = TrainingDataset(config.dataset, chunk)
        # LoRA keeps the initial weights in base/ (checkpoint/ gets the merged ones) so a resume starts from them
        base = self.out / "base"
        if source is None:
            prepare_checkpoint(self.checkpoint, config, self.dataset)
            if config.lora_rank:
                shutil.copytree(self.checkpoint, base, dirs_exist_ok=True)
        elif source.resolve() != self.out.resolve():
            shutil.copytree(source / "checkpoint", self.checkpoint, dirs_exist_ok=True)
            if config.lora_rank:
                shutil.copytree(source / "base", base, dirs_exist_ok=True)
        weights = base if config.lora_rank else self.checkpoint
        self.pipeline = WallOssPipeline.from_pretrained(weights, dtype=torch.float32, device=self.device)
        if self.pipeline.config.generation != "wall_oss_05":
            raise TrainingError("training implements the Wall-OSS-0.5 objective; this is a "
                                f"{self.pipeline.config.generation} checkpoint")
        self.model = self.pipeline.model
        self.lora = add_lora(self.model, config.lora_rank) if config.lora_rank else None
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.betas, eps=config.eps,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, config))
        self.times = FlowTimeSampler.for_config(self.pipeline.config)
        self.rng = np.random.default_rng(config.seed)
        self.noise = torch.Generator(device=self.device).manual_seed(config.seed)
        self.step = 0
        if source is not None:
            self._restore(source)

    # ---------------------------------------------------------------- one step
    def loss(self, indices, rng: np.random.Generator | None = None,
             noise_generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow loss of these dataset frames; flow times and noise from the training streams unless given."""
        rng, noise_generator = rng or self.rng, noise_generator or self.noise
        sample = self.dataset.batch(indices)
        batch = self.pipeline.prepare(sample["images"], sample["state"], sample["tasks"])
        inputs = self.pipeline.model_inputs(batch)
        normalized = self.pipeline.normalization.action.normalize(torch.from_numpy(sample["actions"]))
        b, h, width = normalized.shape
        actions = torch.zeros(b, h, self.pipeline.spec.model_action_dim)
        actions[..., :width] = normalized
        noise = torch.randn(actions.shape, generator=noise_generator, device=self.device)
        t = self.times(b, rng).to(self.device)
        autocast = torch.autocast(self.device.type, dtype=getattr(torch, self.config.dtype),
                                  enabled=self.config.dtype != "float32")
        with autocast:
            loss, _ = flow_loss(self.model, inputs, actions.to(self.device), noise, t,
                                torch.from_numpy(sample["valid"]).to(self.device))
        return loss

    @torch.no_grad()
    def evaluate(self, indices, seed: int = 0) -> float:
        """The loss on fixed frames with fixed noise and flow times (comparable across steps)."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return float(self.loss(indices, np.random.default_rng(seed), generator))

    def train_step(self) -> float:
        indices = self.rng.integers(0, len(self.dataset), size=self.config.batch_size)
        loss = self.loss(indices)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(loss.detach())

    def run(self) -> list[float]:
        from tqdm import tqdm

        last = min(self.config.steps, self.config.stop_at or self.config.steps)
        losses = []
        bar = tqdm(total=last, initial=self.step, desc="train", unit="step", disable=not self.config.progress)
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / "train_log.jsonl").open("a") as log:
            while self.step < last:
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self.train_step()
                losses.append(loss)
                log.write(json.dumps({"step": self.step, "loss": loss, "lr": lr}) + "\n")
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
        bar.close()
        self.save()
        return losses

    # ---------------------------------------------------------------- saving and resuming
    def save(self) -> None:
        save_weights(self.model, self.checkpoint)
        if (self.out / "train_log.jsonl").is_file() and (self.out / "train_log.jsonl").stat().st_size:
            write_training_curve(self.out / "train_log.jsonl", self.out / "training_curve.png")
        if self.lora is not None:
            save_adapter(self.model, self.lora, self.out / "adapter")
        state_dir = self.out / "state"
        state_dir.mkdir(parents=True, exist_ok=True)
        trainable = {name: p.detach().cpu().contiguous() for name, p in self.model.named_parameters()
                     if p.requires_grad}
        save_file(trainable, str(state_dir / "trainable.safetensors"))
        torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "rng": self.rng.bit_generator.state,
                    "noise": self.noise.get_state(), "config": dataclasses.asdict(self.config)},
                   state_dir / "trainer.pt")

    def _restore(self, source: Path) -> None:
        state = torch.load(source / "state" / "trainer.pt", weights_only=False)
        trainable = load_file(str(source / "state" / "trainable.safetensors"))
        named = dict(self.model.named_parameters())
        if set(trainable) != {n for n, p in named.items() if p.requires_grad}:
            raise TrainingError(f"{source}: the saved trainable parameters do not match this run (LoRA rank?)")
        with torch.no_grad():
            for name, value in trainable.items():
                named[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["rng"]
        self.noise.set_state(state["noise"])
        self.step = int(state["step"])
