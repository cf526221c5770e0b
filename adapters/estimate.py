"""Predict peak training memory of a QLoRA/LoRA recipe before loading anything.

Terms (bytes): 4-bit base weights (NF4: 4 bits + block constants; double quant stores them in 8 bits),
the weights left unquantized (embeddings, lm_head, norms; fp32 when PEFT's prepare_model_for_kbit_training
upcasts them), LoRA weights + gradients + optimizer states, activations (with gradient checkpointing:
every layer's input plus one layer recomputed; without: every layer's saved tensors), the LM-head tile
TRL's fused log-prob kernel allocates, and the transient full-precision copy of the largest 4-bit
weight that bitsandbytes dequantizes per matmul. The decoder is modelled as Llama-style (GQA + SwiGLU),
which covers Llama, Qwen2, Mistral and the mini-lab base.

On several GPUs (`gpus` > 1) the figure is per GPU. DDP keeps a full replica per GPU plus gradient
buckets for the all-reduce. FSDP (FULL_SHARD, one unit per decoder layer, LoRA layers in their own
units as PEFT's wrap policy does) shards the packed 4-bit weights, the other weights, the adapter, its
gradients and optimizer states over the GPUs; every GPU still holds: the NF4 block constants (quant
state is not a parameter, so FSDP does not shard it), the unsharded root unit (embeddings, lm_head,
final norm: FSDP keeps the root gathered from forward to backward), two gathered decoder layers (the
current one and the prefetched one), its own activations, and communication buffers. With CPU offload
(`fsdp_offload_params`) the sharded states live in CPU RAM instead.
Hand-written: no library predicts this from a recipe (accelerate's estimator counts weights only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from lightalign.errors import UserError
from lightalign.io import read_json_object

GIB = 1024 ** 3
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NF4_BLOCK, DQ_BLOCK = 64, 256
TOKEN_TILE, VOCAB_TILE = 4096, 32768  # trl.kernels.chunked_logprob tile of the fused LM head
CUDA_CONTEXT_GIB = 0.5                # CUDA context + cuBLAS workspace, outside the allocator's count
COMM_BUFFER_BYTES = 256 * 2**20       # NCCL buffers of a multi-GPU job (a rough allowance, inside the allocator)
FRAGMENTATION = 1.10                  # allocator slack on top of the allocated peak


@dataclass
class Arch:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int | None = None
    qkv_bias: bool = False

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each decoder-layer linear."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def params(self) -> int:
        lin = self.layers * sum(a * b for a, b in self.linear_shapes().values())
        return lin + self.vocab * self.hidden * (1 if self.tied else 2) + (2 * self.layers + 1) * self.hidden


# Public configs (config.json on the hub) of the models the GPU recipes name, for offline estimates.
KNOWN = {
    "qwen2.5-0.5b": Arch(896, 4864, 24, 14, 2, 151936, True, qkv_bias=True),
    "qwen2.5-1.5b": Arch(1536, 8960, 28, 12, 2, 151936, True, qkv_bias=True),
    "qwen2.5-3b": Arch(2048, 11008, 36, 16, 2, 151936, True, qkv_bias=True),
    "qwen2.5-7b": Arch(3584, 18944, 28, 28, 4, 152064, False, qkv_bias=True),
    "qwen2.5-14b": Arch(5120, 13824, 48, 40, 8, 152064, False, qkv_bias=True),
    "qwen2.5-32b": Arch(5120, 27648, 64, 40, 8, 152064, False, qkv_bias=True),
    "llama-3.2-1b": Arch(2048, 8192, 16, 32, 8, 128256, True, head_dim=64),
    "llama-3.2-3b": Arch(3072, 8192, 28, 24, 8, 128256, True, head_dim=128),
    "llama-3.1-8b": Arch(4096, 14336, 32, 32, 8, 128256, False),
    "llama-3.1-70b": Arch(8192, 28672, 80, 64, 8, 128256, False),
    "llama-2-7b": Arch(4096, 11008, 32, 32, 32, 32000, False),
    "llama-2-13b": Arch(5120, 13824, 40, 40, 40, 32000, False),
    "llama-2-70b": Arch(8192, 28672, 80, 64, 8, 32000, False),
    "mistral-7b": Arch(4096, 14336, 32, 32, 8, 32000, False),
}


ARCH_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def arch_from_config(cfg: dict, source="config.json") -> Arch:
    for key in ARCH_SIZES + ("num_key_value_heads", "head_dim"):  # a missing size is named below
        value = cfg.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**40):
            continue
        raise UserError(f"{source}: {key!r} must be a positive integer, got {str(value)[:40]!r}")
    try:
        return Arch(hidden=cfg["hidden_size"], intermediate=cfg["intermediate_size"],
                    layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                    kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
                    vocab=cfg["vocab_size"], tied=bool(cfg.get("tie_word_embeddings", False)),
                    head_dim=cfg.get("head_dim"), qkv_bias=bool(cfg.get("attention_bias", False))
                    or cfg.get("model_type") == "qwen2")
    except KeyError as e:
        raise UserError(f"{source} lacks {e.args[0]!r}: not a Llama-style decoder the estimator knows") from None


def resolve_arch(name_or_path: str) -> Arch:
    """config.json from a local folder (a pkg: or GGUF source: its dequantized copy, made once), the
    local hub cache, or the built-in table of public configs."""
    from lightalign.model_sources import resolve

    path = Path(resolve(name_or_path)) / "config.json"
    if path.exists():
        return arch_from_config(read_json_object(path, "config.json"), path)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
        if isinstance(cached, str):
            return arch_from_config(read_json_object(cached, "config.json"), cached)
    except Exception:  # not a valid repo id, no cache: fall through to the table
        pass
    key = name_or_path.rstrip("/").split("/")[-1].lower().replace("meta-", "")
    for name, arch in KNOWN.items():
        if key == name or key.startswith(name + "-") or key.startswith(name.replace("-", "")):
            return arch
    raise UserError(f"model.name_or_path: {name_or_path}: no local config.json and not a known model "
                    f"({', '.join(KNOWN)}); pass a folder holding its config.json")


@dataclass
class Setup:
    quantization: str = "nf4"
    double_quant: bool = True
    compute_bytes: int = 2             # bf16 on GPU, 4 on CPU (fp32)
    upcast_non_quantized: bool = True  # prepare_model_for_kbit_training casts fp16/bf16 leftovers to fp32
    lora_r: int = 16
    lora_targets: tuple = LINEARS
    lora_dropout: float = 0.05
    use_dora: bool = False
    adapter_bytes: int = 2             # TRL keeps QLoRA adapters in bf16 on GPU; fp32 on CPU
    optim: str = "adamw_torch"
    batch_size: int = 1                # sequences per step (DPO/ORPO: pairs -> 2 sequences each)
    seq_len: int = 1024
    gradient_checkpointing: bool = True
    gpus: int = 1                      # processes (one per GPU); the estimate is then per GPU
    fsdp: bool = False                 # FSDP FULL_SHARD over `gpus` (else DDP when gpus > 1)
    cpu_offload: bool = False          # FSDP fsdp_offload_params: sharded states in CPU RAM


def optimizer_bytes_per_param(optim: str, param_bytes: int) -> float:
    if "8bit" in optim:
        return 2.0
    if optim in ("sgd", "adafactor"):
        return 0.0 if optim == "sgd" else param_bytes * 0.1
    return 2.0 * (4 if "32bit" in optim else param_bytes)  # Adam: exp_avg + exp_avg_sq


def estimate(arch: Arch, s: Setup) -> dict:
    """Bytes per term and the predicted peak (allocated) for one training step."""
    shapes = arch.linear_shapes()
    lin_params = arch.layers * sum(a * b for a, b in shapes.values())
    other_params = arch.params() - lin_params
    if s.quantization == "nf4":
        # 4 bits + one absmax per 64-weight block: fp32, or with double quant 8-bit + fp32 per 256 blocks
        constants = (1 + 4 / DQ_BLOCK) if s.double_quant else 4
        per_param = 0.5 + constants / NF4_BLOCK
        base_linear = lin_params * per_param
        other_bytes = 4 if s.upcast_non_quantized else s.compute_bytes
    else:
        base_linear = lin_params * s.compute_bytes
        other_bytes = s.compute_bytes
    base_other = other_params * other_bytes
    targets = [t for t in s.lora_targets if t in shapes]
    lora_params = arch.layers * sum(s.lora_r * (shapes[t][0] + shapes[t][1]) + (shapes[t][1] if s.use_dora else 0)
                                    for t in targets)
    adapter = lora_params * s.adapter_bytes
    grads = lora_params * s.adapter_bytes
    optimizer = lora_params * optimizer_bytes_per_param(s.optim, s.adapter_bytes)

    tokens = s.batch_size * s.seq_len
    h, i, kv, q = arch.hidden, arch.intermediate, arch.kv_dim, arch.q_dim
    # tensors autograd keeps per token in one layer: norms' inputs/outputs, q/k/v (+ rotated q/k), attention
    # output, SwiGLU's gate/up/act/product; RMSNorm's fp32 upcast of its input
    per_layer = 4 * h + 2 * q + 3 * kv + q + 4 * i
    per_layer_bytes = per_layer * s.compute_bytes + 2 * h * 4
    if s.lora_dropout > 0:  # each LoRA branch keeps its own dropped-out copy of the input + a 1-byte mask
        per_layer_bytes += sum(shapes[t][0] for t in targets) * (s.compute_bytes + 1)
    per_layer_bytes += sum(s.lora_r for _ in targets) * s.compute_bytes
    # with checkpointing autograd keeps each layer's input and recomputes one layer at a time in backward
    saved = tokens * arch.layers * (h * s.compute_bytes if s.gradient_checkpointing else per_layer_bytes)
    saved += tokens * h * (s.compute_bytes + 4)  # final norm output + its fp32 upcast
    recompute = tokens * per_layer_bytes if s.gradient_checkpointing else 0
    # gradients of the hidden state and of the MLP's intermediate tensors alive during a layer's backward
    working = tokens * (2 * h + 2 * i) * s.compute_bytes
    # the fused LM head works on one [token tile x vocab tile] buffer (+ its gradient) at the end of the
    # forward; the recomputed layer and the backward working set only exist later
    logits = min(tokens, TOKEN_TILE) * min(arch.vocab, VOCAB_TILE) * s.compute_bytes * 2
    largest = max(a * b for a, b in shapes.values())
    dequant = largest * s.compute_bytes * 2 if s.quantization == "nf4" else 0  # forward + backward copy
    terms = {"base_4bit_linear" if s.quantization == "nf4" else "base_linear": base_linear,
             "base_unquantized": base_other, "adapter": adapter, "gradients": grads, "optimizer": optimizer,
             "activations_saved": saved, "activations_recompute": recompute, "backward_working_set": working,
             "lm_head_tile": logits, "dequant_transient": dequant}
    static = base_linear + base_other + adapter + grads + optimizer
    out = {"lora_params": lora_params, "base_params": arch.params(), "tokens_per_step": tokens}
    if s.gpus > 1 and s.fsdp:
        terms, static, out["cpu_offloaded_bytes"] = _fsdp_terms(arch, s, terms, lora_params)
    elif s.gpus > 1:
        terms["ddp_gradient_buckets"] = grads  # DDP all-reduces from bucket copies of the gradients
        terms["comm_buffers"] = COMM_BUFFER_BYTES
        static += grads + COMM_BUFFER_BYTES
    peak = static + saved + max(logits, recompute + working) + dequant
    return {"terms": {k: int(v) for k, v in terms.items()}, "peak_bytes": int(peak), "static_bytes": int(static),
            **out}


def _fsdp_terms(arch: Arch, s: Setup, terms: dict, lora_params: int) -> tuple[dict, float, float]:
    """Per-GPU weight and state terms under FSDP FULL_SHARD: (terms, static bytes, bytes offloaded to CPU)."""
    n = s.gpus
    quantized = "base_4bit_linear" in terms
    linear = terms["base_4bit_linear" if quantized else "base_linear"]
    lin_params = arch.layers * sum(a * b for a, b in arch.linear_shapes().values())
    packed = lin_params * 0.5 if quantized else linear          # the sharded 4-bit payload
    constants = linear - packed                                  # NF4 block constants, on every GPU
    other_params = arch.params() - lin_params
    other_bytes = terms["base_unquantized"] / other_params if other_params else 0
    root = (other_params - 2 * arch.layers * arch.hidden) * other_bytes  # embeddings, lm_head, final norm
    layer = (packed + 2 * arch.layers * arch.hidden * other_bytes + lora_params * s.adapter_bytes) / arch.layers
    sharded = {"base_4bit_linear" if quantized else "base_linear": packed / n,
               "base_unquantized": terms["base_unquantized"] / n,
               "adapter": terms["adapter"] / n, "gradients": terms["gradients"] / n,
               "optimizer": terms["optimizer"] / n}
    offloaded = sum(sharded.values()) if s.cpu_offload else 0.0
    if s.cpu_offload:
        sharded = {k: 0 for k in sharded}
    out = {**terms, **sharded}
    if quantized:
        out["quant_constants"] = constants
    out["gathered_root"] = root
    out["gathered_layers"] = 2 * layer
    out["comm_buffers"] = COMM_BUFFER_BYTES
    static = sum(sharded.values()) + (constants if quantized else 0) + root + 2 * layer + COMM_BUFFER_BYTES
    return out, static, offloaded


def setup_from_recipe(cfg, method: str, device: str = "cuda", bf16: bool = True, gpus: int = 1,
                      fsdp: bool = False, cpu_offload: bool = False) -> Setup:
    """The Setup a recipe Config trains with on `device` ('cuda' with/without bf16, or 'cpu'), on
    `gpus` processes with DDP, or FSDP when `fsdp`; training.batch_size is per process."""
    compute = {"bf16": 2, "fp16": 2, "fp32": 4}.get(cfg.model.compute_dtype) or (2 if device == "cuda" and bf16 else 4)
    targets = LINEARS if cfg.lora.target_modules == "all-linear" else tuple(cfg.lora.target_modules)
    pairs = 2 if method in ("dpo", "orpo") else 1
    return Setup(quantization=cfg.model.quantization, double_quant=cfg.model.double_quant, compute_bytes=compute,
                 upcast_non_quantized=cfg.model.upcast_non_quantized, lora_r=cfg.lora.r, lora_targets=targets,
                 lora_dropout=cfg.lora.dropout, use_dora=cfg.lora.use_dora,
                 adapter_bytes=2 if (compute == 2 and cfg.model.quantization == "nf4") else 4,
                 optim=cfg.training.optim, batch_size=cfg.training.batch_size * pairs,
                 seq_len=cfg.data.max_length, gradient_checkpointing=cfg.training.gradient_checkpointing,
                 gpus=gpus, fsdp=fsdp, cpu_offload=cpu_offload)


def fits(peak_bytes: int, card_gib: float) -> tuple[bool, float]:
    """Does the predicted peak fit a card of `card_gib`? Returns (fits, headroom GiB)."""
    need = peak_bytes * FRAGMENTATION / GIB + CUDA_CONTEXT_GIB
    return need <= card_gib, card_gib - need


def report(arch: Arch, s: Setup) -> dict:
    out = estimate(arch, s)
    other = Setup(**{**asdict(s), "gradient_checkpointing": not s.gradient_checkpointing})
    out["peak_bytes_other_checkpointing"] = estimate(arch, other)["peak_bytes"]
    return out


def weight_bytes(model) -> int:
    """Bytes the loaded weights actually hold, NF4 block constants (double-quantized) included.

    What the estimator's weight terms are checked against, in tests and the 4-bit benchmark."""
    import bitsandbytes as bnb

    total, seen = 0, set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) not in seen:  # a tied lm_head shares the embedding's tensor
                seen.add(id(p))
                total += p.numel() * p.element_size()
        if isinstance(module, bnb.nn.Linear4bit):
            qs = module.weight.quant_state
            total += qs.absmax.numel() * qs.absmax.element_size()
            if qs.nested:
                total += qs.state2.absmax.numel() * qs.state2.absmax.element_size()
    return total
