"""One configuration dataclass for both Wall-OSS checkpoint generations.

`WallOssConfig.from_checkpoint_dir` reads the three `config.json` layouts found in the wild:

* ``wall_oss_05``: the LeRobot policy layout (``"type": "wall_oss_05"``) whose ``vlm_config`` holds the
  Qwen2.5-VL text/vision configs plus the Mixture-of-Transformers fields (``experts``, ``dim_inputs``,
  ``action_hidden_size``, ``noise_scheduler``).  The author checkpoint stores the same ``vlm_config``
  at the top level of ``config.json`` (text fields nested in ``text_config`` or flat); all are accepted,
  with the 0.5 standard action/state width 26 and horizon 32 when the policy fields are absent.
* ``wall_oss_flow``: the X-Square-Robot flow layout (a flat Qwen2.5-VL config with ``experts``,
  ``dof_config``, ``agent_pos_config``, ``noise_scheduler``).
* ``wall_x``: a LeRobot ``wall_x`` policy directory (``"type": "wall_x"``), whose text/vision fields are
  flat policy fields and whose expert widths are not stored; they are read from the weight shapes.

The `<|propri|>` / `<|action|>` token ids are not in any config: they come from the tokenizer files
(appended after the tokenizer's last id when the tokenizer does not define them, as the reference does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .checkpoint_files import read_tensor_shapes

Generation = Literal["wall_oss_05", "wall_oss_flow"]


class ConfigError(ValueError):
    """A checkpoint's config.json is missing fields or has inconsistent ones."""


@dataclass(frozen=True)
class TextDecoderConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, int, int]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class ExpertConfig:
    """One expert of the decoder: the residual width it reads/writes and its SwiGLU MLP width."""

    hidden_size: int
    intermediate_size: int


@dataclass(frozen=True)
class ActionHeadConfig:
    action_dim: int
    state_dim: int
    chunk_size: int
    hidden_size: int  # width of the action embedder / expert (0.5: first channels of the residual)


@dataclass(frozen=True)
class SamplerConfig:
    """Flow-time schedule (`noise_scheduler` in config.json); see `flow_time` for the formulas."""

    num_steps: int = 10
    time_scale: float = 1.0  # 0.5 multiplies the Euler times by s = 0.999; flow uses 1.0
    time_shift: float = 1.0  # k: t -> k t / (1 + (k - 1) t) before scaling (LeRobot wall_oss_05)
    train_time_scale: float = 0.999  # s of the training times (both generations)
    beta_alpha: float = 1.5  # training time 1 - Beta(alpha, beta)
    beta_beta: float = 1.0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ConfigError(f"noise_scheduler: num_inference_timesteps must be >= 1, got {self.num_steps}")
        if not self.time_shift > 0:
            raise ConfigError(f"noise_scheduler: time_shift must be > 0, got {self.time_shift}")
        if not (self.beta_alpha > 0 and self.beta_beta > 0):
            raise ConfigError(f"noise_scheduler: beta_alpha/beta_beta must be > 0, got "
                              f"{self.beta_alpha}/{self.beta_beta}")

    def noise_scheduler_json(self) -> dict[str, float | int]:
        """The config.json `noise_scheduler` block (time_shift only when it is not the identity)."""
        out: dict[str, float | int] = {"beta_alpha": self.beta_alpha, "beta_beta": self.beta_beta,
                                       "s": self.train_time_scale, "num_inference_timesteps": self.num_steps}
        if self.time_shift != 1.0:
            out["time_shift"] = self.time_shift
        return out


@dataclass(frozen=True)
class TokenIds:
    action: int
    propri: int
    image_pad: int
    video_pad: int
    vision_start: int
    vision_end: int
    pad: int


@dataclass(frozen=True)
class WallOssConfig:
    generation: Generation
    text: TextDecoderConfig
    vision: dict[str, Any]  # raw Qwen2.5-VL vision config dict (builds transformers' vision tower)
    experts: tuple[ExpertConfig, ExpertConfig]  # (vision-language expert, action expert)
    action: ActionHeadConfig
    sampler: SamplerConfig
    token_ids: TokenIds
    camera_key_mapping: dict[str, str] = field(default_factory=dict)  # LeRobot feature key -> camera
    dof_config: dict[str, int] = field(default_factory=dict)  # flow: action schema name -> width
    agent_pos_config: dict[str, int] = field(default_factory=dict)  # flow: state schema name -> width
    policy_fields: dict[str, Any] = field(default_factory=dict)  # untouched non-model config fields

    # ---------------------------------------------------------------- derived views
    @property
    def hidden_size(self) -> int:
        return self.text.hidden_size

    @property
    def action_expert_width(self) -> int:
        return self.experts[1].hidden_size

    def vision_transformers_config(self):
        """Config object for transformers' `Qwen2_5_VisionTransformerPretrainedModel`."""
        from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig

        kwargs = {k: v for k, v in self.vision.items() if k not in ("model_type", "architectures")}
        kwargs.setdefault("out_hidden_size", self.text.hidden_size)
        return Qwen2_5_VLVisionConfig(**kwargs)

    # ---------------------------------------------------------------- parsing
    @classmethod
    def from_checkpoint_dir(cls, checkpoint_dir: str | Path) -> WallOssConfig:
        directory = Path(checkpoint_dir)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise ConfigError(f"{directory}: no config.json")
        try:
            raw = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid JSON ({exc})") from exc
        return cls.from_json_dict(raw, directory)

    @classmethod
    def from_json_dict(cls, raw: dict[str, Any], checkpoint_dir: str | Path | None = None) -> WallOssConfig:
        directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
        layout = detect_layout(raw)
        if layout == "wall_oss_05":
            return _parse_05(raw, directory)
        if layout == "wall_oss_flow":
            return _parse_flow(raw, directory)
        return _parse_wall_x(raw, directory)

    # ---------------------------------------------------------------- writing
    def to_json_dict(self) -> dict[str, Any]:
        """A config.json dict in this generation's native layout that parses back to this config."""
        text, vis = self.text, dict(self.vision)
        experts = [{"hidden_size": e.hidden_size, "intermediate_size": e.intermediate_size, "hidden_act": "silu"}
                   for e in self.experts]
        token_fields = {
            "image_token_id": self.token_ids.image_pad,
            "video_token_id": self.token_ids.video_pad,
            "vision_start_token_id": self.token_ids.vision_start,
            "vision_end_token_id": self.token_ids.vision_end,
        }
        text_fields = {
            "vocab_size": text.vocab_size,
            "hidden_size": text.hidden_size,
            "intermediate_size": text.intermediate_size,
            "num_hidden_layers": text.num_hidden_layers,
            "num_attention_heads": text.num_attention_heads,
            "num_key_value_heads": text.num_key_value_heads,
            "hidden_act": "silu",
            "rms_norm_eps": text.rms_norm_eps,
            "pad_token_id": self.token_ids.pad,
            "propri_token_id": self.token_ids.propri,
            "action_token_id": self.token_ids.action,
        }
        if self.generation == "wall_oss_05":
            vlm = {
                "model_type": "qwen2_5_vl",
                **token_fields,
                "tie_word_embeddings": True,
                "text_config": {
                    "model_type": "qwen2_5_vl_text",
                    **text_fields,
                    "rope_parameters": {"rope_type": "default", "rope_theta": text.rope_theta,
                                        "mrope_section": list(text.mrope_section)},
                },
                "vision_config": vis,
                "num_experts": 2,
                "dim_inputs": [e.hidden_size for e in self.experts],
                "experts": experts,
                "action_hidden_size": self.action.hidden_size,
                "noise_scheduler": self.sampler.noise_scheduler_json(),
                "causal_action_attention_mask": True,
                "use_state_string_representation": True,
            }
            out = dict(self.policy_fields)
            out.update({
                "type": "wall_oss_05",
                "vlm_config": vlm,
                "chunk_size": self.action.chunk_size,
                "max_action_dim": self.action.action_dim,
                "max_state_dim": self.action.state_dim,
                "num_inference_timesteps": self.sampler.num_steps,
                "camera_key_mapping": dict(self.camera_key_mapping),
            })
            return out
        out = dict(self.policy_fields)
        out.update({
            "model_type": "qwen2_5_vl",
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            **text_fields,
            **token_fields,
            "rope_theta": text.rope_theta,
            "rope_scaling": {"type": "mrope", "mrope_section": list(text.mrope_section)},
            "tie_word_embeddings": True,
            "vision_config": vis,
            "num_experts": 2,
            "experts": experts,
            "dim_inputs": [e.hidden_size for e in self.experts],
            "attention_moe": False,
            "mlp_moe": True,
            "dof_config": dict(self.dof_config),
            "agent_pos_config": dict(self.agent_pos_config),
            "noise_scheduler": self.sampler.noise_scheduler_json(),
            "chunk_size": self.action.chunk_size,
        })
        if self.camera_key_mapping:
            out["camera_key_mapping"] = dict(self.camera_key_mapping)
        return out


# ==================================================================== layout parsers

def detect_layout(raw: dict[str, Any]) -> Literal["wall_oss_05", "wall_oss_flow", "wall_x"]:
    kind = raw.get("type")
    if kind == "wall_oss_05" or "vlm_config" in raw:
        return "wall_oss_05"
    if kind == "wall_x":
        return "wall_x"
    if "action_hidden_size" in raw:  # author 0.5 layout: the vlm_config itself
        return "wall_oss_05"
    if "experts" in raw and "hidden_size" in raw:
        return "wall_oss_flow"
    raise ConfigError(
        "config.json is neither a Wall-OSS-0.5 config (type 'wall_oss_05' / 'vlm_config'), a Wall-OSS-flow "
        "config (flat Qwen2.5-VL fields with 'experts'), nor a LeRobot 'wall_x' config")


def _require(mapping: dict[str, Any], keys: list[str], where: str) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}")


_TEXT_KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads"]
_VISION_KEYS = ["depth", "hidden_size", "intermediate_size", "num_heads", "patch_size",
                "spatial_merge_size", "temporal_patch_size", "out_hidden_size"]


def _rope(text: dict[str, Any], where: str) -> tuple[float, tuple[int, int, int]]:
    params = text.get("rope_parameters") or text.get("rope_scaling") or {}
    theta = params.get("rope_theta", text.get("rope_theta"))
    section = params.get("mrope_section")
    if theta is None or section is None:
        raise ConfigError(f"{where}: missing rope_theta / mrope_section (rope_parameters or rope_scaling)")
    if len(section) != 3:
        raise ConfigError(f"{where}: mrope_section must have 3 entries, got {section}")
    return float(theta), (int(section[0]), int(section[1]), int(section[2]))


def _text_config(text: dict[str, Any], where: str) -> TextDecoderConfig:
    _require(text, _TEXT_KEYS, where)
    theta, section = _rope(text, where)
    cfg = TextDecoderConfig(
        vocab_size=int(text["vocab_size"]),
        hidden_size=int(text["hidden_size"]),
        intermediate_size=int(text["intermediate_size"]),
        num_hidden_layers=int(text["num_hidden_layers"]),
        num_attention_heads=int(text["num_attention_heads"]),
        num_key_value_heads=int(text["num_key_value_heads"]),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        mrope_section=section,
    )
    if cfg.hidden_size % cfg.num_attention_heads or cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ConfigError(f"{where}: hidden_size {cfg.hidden_size} / heads {cfg.num_attention_heads} / "
                          f"kv heads {cfg.num_key_value_heads} are inconsistent")
    if 2 * sum(section) != cfg.head_dim:
        raise ConfigError(f"{where}: mrope_section {list(section)} does not cover head_dim {cfg.head_dim}")
    return cfg


def _vision_config(vision: Any, where: str) -> dict[str, Any]:
    if not isinstance(vision, dict):
        raise ConfigError(f"{where}: missing vision_config")
    _require(vision, _VISION_KEYS, f"{where}.vision_config")
    return dict(vision)


def _experts(raw_experts: Any, where: str) -> tuple[ExpertConfig, ExpertConfig]:
    if not isinstance(raw_experts, list) or len(raw_experts) != 2:
        raise ConfigError(f"{where}: 'experts' must list exactly two experts (vision-language, action)")
    out = []
    for i, e in enumerate(raw_experts):
        _require(e, ["hidden_size", "intermediate_size"], f"{where}.experts[{i}]")
        out.append(ExpertConfig(int(e["hidden_size"]), int(e["intermediate_size"])))
    return out[0], out[1]


def _token_ids(vlm: dict[str, Any], text: dict[str, Any], directory: Path | None, where: str) -> TokenIds:
    _require(vlm, ["image_token_id", "vision_start_token_id", "vision_end_token_id"], where)
    propri, action = resolve_action_token_ids(directory, text)
    return TokenIds(
        action=action,
        propri=propri,
        image_pad=int(vlm["image_token_id"]),
        video_pad=int(vlm.get("video_token_id", vlm["image_token_id"] + 1)),
        vision_start=int(vlm["vision_start_token_id"]),
        vision_end=int(vlm["vision_end_token_id"]),
        pad=int(text.get("pad_token_id", vlm.get("pad_token_id", 0)) or 0),
    )


def resolve_action_token_ids(directory: Path | None, text: dict[str, Any]) -> tuple[int, int]:
    """(<|propri|>, <|action|>) ids: from the tokenizer files, else appended after its last id.

    The reference adds both tokens at load time when the tokenizer lacks them, so they take the next two
    ids (151665 / 151666 for the real Qwen2.5 tokenizer).  Without tokenizer files the config's
    ``propri_token_id`` / ``action_token_id`` fields are required.
    """
    if "action_token_id" in text and "propri_token_id" in text:
        return int(text["propri_token_id"]), int(text["action_token_id"])
    tokenizer_json = directory / "tokenizer.json" if directory is not None else None
    if tokenizer_json is None or not tokenizer_json.is_file():
        raise ConfigError("cannot resolve <|propri|>/<|action|> token ids: no tokenizer.json in the checkpoint "
                          "and no propri_token_id/action_token_id in config.json")
    tok = json.loads(tokenizer_json.read_text())
    ids = {t["content"]: int(t["id"]) for t in tok.get("added_tokens", [])}
    added_json = directory / "added_tokens.json"
    if added_json.is_file():
        ids.update({k: int(v) for k, v in json.loads(added_json.read_text()).items()})
    if "<|action|>" in ids and "<|propri|>" in ids:
        return ids["<|propri|>"], ids["<|action|>"]
    last = max([*ids.values(), *[int(v) for v in tok.get("model", {}).get("vocab", {}).values()]])
    return last + 1, last + 2


def _sampler(noise_scheduler: dict[str, Any], num_steps: Any, scale_times: bool) -> SamplerConfig:
    """0.5 scales the Euler times by the scheduler's s; flow integrates over plain [0, 1] (s is train-only).

    `time_shift` (LeRobot wall_oss_05, default 1) warps both the inference and the training times.
    """
    if not isinstance(noise_scheduler, dict):
        raise ConfigError(f"noise_scheduler must be an object, got {noise_scheduler!r}")
    try:
        steps = int(num_steps if num_steps is not None else noise_scheduler.get("num_inference_timesteps", 10))
        s, shift, alpha, beta = (float(noise_scheduler.get(key, default)) for key, default in
                                 (("s", 0.999), ("time_shift", 1.0), ("beta_alpha", 1.5), ("beta_beta", 1.0)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"noise_scheduler: non-numeric field ({exc})") from exc
    return SamplerConfig(num_steps=steps, time_scale=s if scale_times else 1.0, time_shift=shift,
                         train_time_scale=s, beta_alpha=alpha, beta_beta=beta)


_05_MODEL_FIELDS = {"type", "vlm_config", "chunk_size", "max_action_dim", "max_state_dim",
                    "num_inference_timesteps", "camera_key_mapping"}


def _parse_05(raw: dict[str, Any], directory: Path | None) -> WallOssConfig:
    vlm = raw.get("vlm_config", raw)
    where = "config.json vlm_config" if "vlm_config" in raw else "config.json"
    text = vlm.get("text_config", vlm if "hidden_size" in vlm else None)  # nested (transformers 5) or flat
    if not isinstance(text, dict):
        raise ConfigError(f"{where}: missing text_config (or flat text fields)")
    _require(vlm, ["experts", "action_hidden_size"], where)
    text_cfg = _text_config(text, f"{where}.text_config")
    experts = _experts(vlm["experts"], where)
    if experts[0].hidden_size != text_cfg.hidden_size or experts[1].hidden_size > text_cfg.hidden_size:
        raise ConfigError(f"{where}: expert widths {[e.hidden_size for e in experts]} do not fit hidden_size "
                          f"{text_cfg.hidden_size}")
    if int(vlm["action_hidden_size"]) != experts[1].hidden_size:
        raise ConfigError(f"{where}: action_hidden_size {vlm['action_hidden_size']} != action expert width "
                          f"{experts[1].hidden_size}")
    action_dim = int(raw.get("max_action_dim", vlm.get("max_action_dim", 26)))
    return WallOssConfig(
        generation="wall_oss_05",
        text=text_cfg,
        vision=_vision_config(vlm.get("vision_config"), where),
        experts=experts,
        action=ActionHeadConfig(
            action_dim=action_dim,
            state_dim=int(raw.get("max_state_dim", vlm.get("max_state_dim", action_dim))),
            chunk_size=int(raw.get("chunk_size", vlm.get("chunk_size", 32))),
            hidden_size=experts[1].hidden_size,
        ),
        sampler=_sampler(vlm.get("noise_scheduler", {}), raw.get("num_inference_timesteps"), scale_times=True),
        token_ids=_token_ids(vlm, text, directory, where),
        camera_key_mapping=dict(raw.get("camera_key_mapping", {})),
        policy_fields={k: v for k, v in raw.items() if k not in _05_MODEL_FIELDS} if "vlm_config" in raw else {},
    )


_FLOW_MODEL_FIELDS = {"model_type", "architectures", "vision_config", "experts", "dim_inputs", "dof_config",
                      "agent_pos_config", "noise_scheduler", "chunk_size", "camera_key_mapping", "rope_scaling",
                      "rope_theta", "tie_word_embeddings", "num_experts", "attention_moe", "mlp_moe",
                      "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                      *_TEXT_KEYS, "hidden_act", "rms_norm_eps", "pad_token_id", "propri_token_id",
                      "action_token_id", "num_inference_timesteps"}


def _flow_action_head(raw: dict[str, Any], where: str, hidden_size: int) -> tuple[ActionHeadConfig, dict, dict]:
    _require(raw, ["dof_config", "agent_pos_config"], where)
    dof = {k: int(v) for k, v in raw["dof_config"].items()}
    agent = {k: int(v) for k, v in raw["agent_pos_config"].items()}
    head = ActionHeadConfig(action_dim=sum(dof.values()), state_dim=sum(agent.values()),
                            chunk_size=int(raw.get("chunk_size", 32)), hidden_size=hidden_size)
    return head, dof, agent


def _parse_flow(raw: dict[str, Any], directory: Path | None) -> WallOssConfig:
    where = "config.json (flow layout)"
    text_cfg = _text_config(raw, where)
    experts = _experts(raw["experts"], where)
    if raw.get("attention_moe", False):
        raise ConfigError(f"{where}: attention_moe=true checkpoints are not Wall-OSS-flow (shared attention)")
    if any(e.hidden_size != text_cfg.hidden_size for e in experts):
        raise ConfigError(f"{where}: flow experts must be {text_cfg.hidden_size} wide, got "
                          f"{[e.hidden_size for e in experts]}")
    head, dof, agent = _flow_action_head(raw, where, text_cfg.hidden_size)
    return WallOssConfig(
        generation="wall_oss_flow",
        text=text_cfg,
        vision=_vision_config(raw.get("vision_config"), where),
        experts=experts,
        action=head,
        sampler=_sampler(raw.get("noise_scheduler", {}), raw.get("num_inference_timesteps"), scale_times=False),
        token_ids=_token_ids(raw, raw, directory, where),
        camera_key_mapping=dict(raw.get("camera_key_mapping", {})),
        dof_config=dof,
        agent_pos_config=agent,
        policy_fields={k: v for k, v in raw.items() if k not in _FLOW_MODEL_FIELDS},
    )


def _parse_wall_x(raw: dict[str, Any], directory: Path | None) -> WallOssConfig:
    """LeRobot `wall_x`: flat policy fields; expert MLP widths come from the stored weight shapes."""
    where = "config.json (LeRobot wall_x)"
    _require(raw, [*_TEXT_KEYS, "vision_config"], where)
    text = dict(raw)
    text.setdefault("rope_theta", 1000000.0)
    text.setdefault("rope_scaling", {"mrope_section": raw.get("mrope_section", [16, 24, 24])})
    text_cfg = _text_config(text, where)
    if directory is None:
        raise ConfigError(f"{where}: the expert MLP widths are read from model.safetensors; pass the directory")
    shapes = read_tensor_shapes(directory)
    widths = []
    for e in range(2):
        key = next((k for k in shapes if k.endswith(f"layers.0.moe.experts.{e}.gate_proj.weight")), None)
        if key is None:
            raise ConfigError(f"{where}: model.safetensors has no expert {e} MLP in layer 0")
        widths.append(ExpertConfig(text_cfg.hidden_size, int(shapes[key][0])))
    head, dof, agent = _flow_action_head(raw, where, text_cfg.hidden_size)
    vision = dict(raw["vision_config"])
    vision.setdefault("out_hidden_size", text_cfg.hidden_size)
    return WallOssConfig(
        generation="wall_oss_flow",
        text=text_cfg,
        vision=_vision_config(vision, where),
        experts=(widths[0], widths[1]),
        action=head,
        sampler=_sampler(raw.get("noise_scheduler", {}), raw.get("num_inference_timesteps"), scale_times=False),
        token_ids=_token_ids(_wall_x_token_fields(raw), text, directory, where),
        dof_config=dof,
        agent_pos_config=agent,
        policy_fields={k: v for k, v in raw.items() if k not in _FLOW_MODEL_FIELDS},
    )


def _wall_x_token_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Qwen2.5-VL special-token ids; LeRobot's wall_x config omits them, the real vocabulary fixes them."""
    defaults = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                "vision_end_token_id": 151653}
    return {k: raw.get(k, v) for k, v in defaults.items()}


# ==================================================================== full-size presets

QWEN25_VL_3B_VISION = {
    "depth": 32, "hidden_size": 1280, "hidden_act": "silu", "intermediate_size": 3420, "num_heads": 16,
    "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
    "tokens_per_second": 2, "window_size": 112, "out_hidden_size": 2048,
    "fullatt_block_indexes": [7, 15, 23, 31],
}


def full_size_05_config(action_expert_mlp: int = 2048) -> WallOssConfig:
    """Wall-OSS-0.5 at full size (Qwen2.5-VL-3B backbone, 1024-wide action expert, 26-dim actions).

    The action-expert MLP width is not published (2048 assumed, 4096 possible).  The special-token ids are
    those of the real Qwen2.5 tokenizer with <|propri|>/<|action|> appended.
    """
    return WallOssConfig(
        generation="wall_oss_05",
        text=TextDecoderConfig(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                               num_attention_heads=16, num_key_value_heads=2, rms_norm_eps=1e-6,
                               rope_theta=1000000.0, mrope_section=(16, 24, 24)),
        vision=dict(QWEN25_VL_3B_VISION),
        experts=(ExpertConfig(2048, 11008), ExpertConfig(1024, action_expert_mlp)),
        action=ActionHeadConfig(action_dim=26, state_dim=26, chunk_size=32, hidden_size=1024),
        sampler=SamplerConfig(num_steps=10, time_scale=0.999),
        token_ids=TokenIds(action=151666, propri=151665, image_pad=151655, video_pad=151656, vision_start=151652,
                           vision_end=151653, pad=151643),
    )
