"""A DNABERT-2-architecture encoder in plain PyTorch, traceable for ONNX export.

DNABERT-2 (arXiv 2306.15006; the checkpoint zhihan1996/DNABERT-2-117M) is a
MosaicBERT-style BERT: no position embeddings (ALiBi attention bias instead),
a fused Wqkv projection, a gated-GELU MLP (GEGLU) whose first Linear has no
bias, post-LayerNorm. Its own code unpads tokens with nonzero/index ops and
calls a Triton kernel, so it does not export to ONNX; this module computes the
same function on padded [batch, seq] tensors with ops torch.onnx can trace:

  embeddings  LayerNorm(word[ids] + token_type[tt])           (no positions)
  bias        -slope_h * |j - i|  built from arange(seq)      [1, H, S, S]
              + (1 - mask_j) * -10000                          [B, 1, 1, S]
  per layer   qkv = Wqkv(x)  -> split Q | K | V, each head-major [B, S, H, D]
              a   = softmax(q k^T / sqrt(D) + bias) v
              x   = LayerNorm(x + dense(a))                    attention.output
              g, u = gated_layers(x) split in two halves       (no bias)
              x   = layernorm(x + wo(gelu_erf(g) * u))         mlp
  output      last_hidden_state * mask  (padded positions exactly 0, as the
              original returns them after re-padding)
  pooler      tanh(dense(h[:, 0]))       classifier  Linear(pooled) -> logits

Parameter names are those of the checkpoint (BertForMaskedLM with the prefix
"bert."; a BertForSequenceClassification adds bert.pooler.dense and
classifier), so `load_folder` reads a downloaded DNABERT-2 folder as is.
"""

import json
import math
import os

import torch
from torch import nn

# The real config.json has more keys; these are the ones the architecture uses.
CONFIG_DEFAULTS = dict(vocab_size=4096, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
                       num_labels=2)
MASK_VALUE = -10000.0  # what DNABERT-2's BertEncoder adds for padded keys


def alibi_slopes(n_heads):
    """ALiBi head slopes (Press et al.): for a power of two n, start = 2^(-2^-(log2 n - 3)) and
    slope_i = start^(i+1); otherwise the slopes of the closest power of two c below n, then every
    other slope of 2c, the first n - c of them."""
    if n_heads < 1:
        raise ValueError(f"number of heads must be >= 1, not {n_heads}")

    def power_of_two(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    c = 2 ** int(math.floor(math.log2(n_heads)))
    return power_of_two(c) + alibi_slopes(2 * c)[0::2][:n_heads - c]


def alibi_bias(slopes, seq_len):
    """[1, H, S, S] bias -slope_h * |j - i| for a (possibly traced, dynamic) length S."""
    pos = torch.arange(seq_len, device=slopes.device)
    dist = (pos.unsqueeze(0) - pos.unsqueeze(1)).abs().to(slopes.dtype)  # [S, S]
    return (-slopes).reshape(1, -1, 1, 1) * dist.unsqueeze(0)


class Config:
    def __init__(self, **kw):
        d = dict(CONFIG_DEFAULTS)
        d.update(kw)
        self.__dict__.update(d)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")

    @classmethod
    def from_json(cls, path):
        with open(path) as f:
            d = json.load(f)
        kw = {k: d[k] for k in CONFIG_DEFAULTS if k in d and d[k] is not None}
        if "num_labels" not in d and isinstance(d.get("id2label"), dict):
            kw["num_labels"] = len(d["id2label"])
        return cls(**kw)

    def to_dict(self):
        return {k: getattr(self, k) for k in CONFIG_DEFAULTS}


class Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(0.0)

    def forward(self, input_ids, token_type_ids):
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x, bias):
        b, s = x.shape[0], x.shape[1]
        q, k, v = torch.split(self.Wqkv(x), self.hidden, dim=-1)  # columns Q | K | V
        q = q.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)  # [B, H, S, D], head-major
        k = k.reshape(b, s, self.heads, self.head_dim).permute(0, 2, 3, 1)  # [B, H, D, S]
        v = v.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k) / math.sqrt(self.head_dim) + bias
        probs = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2)  # [B, S, H, D]
        return ctx.reshape(b, s, self.hidden)


class SelfOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(0.0)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = SelfOutput(cfg)

    def forward(self, x, bias):
        return self.output(self.self(x, bias), x)


class GatedMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.inter = cfg.intermediate_size
        self.gated_layers = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x):
        gate, up = torch.split(self.gated_layers(x), self.inter, dim=-1)  # gate = first half
        h = self.dropout(nn.functional.gelu(gate) * up)  # exact (erf) GELU
        return self.layernorm(self.wo(h) + x)


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = Attention(cfg)
        self.mlp = GatedMLP(cfg)

    def forward(self, x, bias):
        return self.mlp(self.attention(x, bias))


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([Layer(cfg) for _ in range(cfg.num_hidden_layers)])
        # Not a checkpoint tensor: derived from the head count, like the original's alibi buffer.
        self.register_buffer("slopes", torch.tensor(alibi_slopes(cfg.num_attention_heads)), persistent=False)

    def forward(self, x, attention_mask):
        s = x.shape[1]
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * MASK_VALUE  # [B, 1, 1, S]
        bias = alibi_bias(self.slopes, s) + mask  # [B, H, S, S], once for all layers
        for layer in self.layer:
            x = layer(x, bias)
        return x


class Pooler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, h):
        return self.activation(self.dense(h[:, 0]))


class DnaBertModel(nn.Module):
    """The encoder (names under "bert." in the checkpoint)."""

    def __init__(self, cfg, pooler=False):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = Pooler(cfg) if pooler else None

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.encoder(self.embeddings(input_ids, token_type_ids), attention_mask)
        # DNABERT-2 computes real tokens only and re-pads with zeros.
        h = h * attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = self.pooler(h) if self.pooler is not None else None
        return h, pooled


class DnaBertForSequenceClassification(nn.Module):
    """bert (with pooler) -> dropout -> classifier, as DNABERT-2's BertForSequenceClassification."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.bert = DnaBertModel(cfg, pooler=True)
        self.dropout = nn.Dropout(0.0)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return h, self.classifier(self.dropout(pooled))


class Wrapper(nn.Module):
    """Holds the model under the checkpoint's names: `bert.*` (+ `classifier.*`)."""

    def __init__(self, cfg, classifier=False, pooler=False):
        super().__init__()
        self.config = cfg
        self.is_classifier = classifier
        # Set by export_onnx.py: forward returns last_hidden_state (+ logits) and ignores
        # token_type_ids when drop_token_types is set. Initializer names stay the checkpoint's.
        self.onnx_outputs = False
        self.drop_token_types = False
        if classifier:
            m = DnaBertForSequenceClassification(cfg)
            self.bert, self.dropout, self.classifier = m.bert, m.dropout, m.classifier
        else:
            self.bert = DnaBertModel(cfg, pooler=pooler)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if self.drop_token_types:
            token_type_ids = None
        h, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        if self.is_classifier:
            return h, self.classifier(self.dropout(pooled))
        return h if self.onnx_outputs else (h, pooled)


def use_onednn(model):
    """Routes the model's nn.Linear layers through oneDNN (tools/prune_bert.py's helper): Debian's
    torch multiplies with a reference BLAS, ~30x slower. Same math; training and checks only."""
    tools = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    import sys
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import prune_bert
    prune_bert.use_onednn_linears(model)
    return model


# ---- checkpoint folders ----------------------------------------------------------------

def read_state_dict(folder):
    """The tensors of pytorch_model.bin or model.safetensors in `folder`."""
    st = os.path.join(folder, "model.safetensors")
    pt = os.path.join(folder, "pytorch_model.bin")
    if os.path.exists(st):
        from safetensors.torch import load_file
        return load_file(st)
    if os.path.exists(pt):
        return torch.load(pt, map_location="cpu")
    raise FileNotFoundError(f"{folder}: neither model.safetensors nor pytorch_model.bin")


def normalise_names(sd, n_layers):
    """Checkpoint names -> this module's names: adds the "bert." prefix of a bare BertModel
    checkpoint, fuses separate query/key/value (older MosaicBERT checkpoints) into Wqkv, and drops
    what inference does not use (the MLM head, buffers)."""
    if not any(k.startswith("bert.") for k in sd):
        sd = {(k if k.startswith(("classifier.", "cls.")) else "bert." + k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("cls.") and not k.endswith(".alibi")
          and not k.endswith("position_ids") and not k.endswith("embeddings.token_type_ids")}
    for i in range(n_layers):
        base = f"bert.encoder.layer.{i}.attention.self."
        for p in ("weight", "bias"):
            parts = [base + f"{n}.{p}" for n in ("query", "key", "value")]
            if all(n in sd for n in parts):
                sd[base + f"Wqkv.{p}"] = torch.cat([sd.pop(n) for n in parts], dim=0)
    return sd


def load_folder(folder, classifier=None):
    """Wrapper model (eval mode) from a DNABERT-2 folder: config.json + pytorch_model.bin or
    model.safetensors. classifier=None: a classifier if the checkpoint holds `classifier.weight`."""
    cfg = Config.from_json(os.path.join(folder, "config.json"))
    sd = normalise_names(read_state_dict(folder), cfg.num_hidden_layers)
    has_cls = "classifier.weight" in sd
    if classifier is None:
        classifier = has_cls
    if classifier and not has_cls:
        raise ValueError(f"{folder}: no classifier.weight in the checkpoint")
    if classifier:
        cfg.num_labels = sd["classifier.weight"].shape[0]
    else:
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    pooler = classifier or "bert.pooler.dense.weight" in sd
    model = Wrapper(cfg, classifier=classifier, pooler=pooler)
    for name, t in model.state_dict().items():
        if name in sd and tuple(sd[name].shape) != tuple(t.shape):
            raise ValueError(f"{folder}: {name} has shape {tuple(sd[name].shape)}, expected {tuple(t.shape)} "
                             f"from config.json")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if not pooler:
        unexpected = [k for k in unexpected if not k.startswith("bert.pooler.")]
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not match the DNABERT-2 architecture: "
                         f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    return model.eval()


def save_folder(model, folder, mlm_head=False, safetensors=False, extra_config=None):
    """Writes config.json and the weights under the checkpoint's names. mlm_head adds the
    cls.predictions.* tensors of BertForMaskedLM (as the released 117M checkpoint has them)."""
    os.makedirs(folder, exist_ok=True)
    cfg = model.config
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if mlm_head:
        h, v = cfg.hidden_size, cfg.vocab_size
        g = torch.Generator().manual_seed(1234)
        sd["cls.predictions.transform.dense.weight"] = torch.randn(h, h, generator=g) * 0.02
        sd["cls.predictions.transform.dense.bias"] = torch.zeros(h)
        sd["cls.predictions.transform.LayerNorm.weight"] = torch.ones(h)
        sd["cls.predictions.transform.LayerNorm.bias"] = torch.zeros(h)
        sd["cls.predictions.bias"] = torch.zeros(v)
        sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"].clone()
        sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"].clone()
    conf = dict(cfg.to_dict())
    conf.update({"model_type": "bert", "architectures": [
        "BertForSequenceClassification" if getattr(model, "is_classifier", False) else "BertForMaskedLM"],
        "hidden_act": "gelu", "max_position_embeddings": 512, "alibi_starting_size": 512,
        "attention_probs_dropout_prob": 0.0, "hidden_dropout_prob": 0.1})
    if not getattr(model, "is_classifier", False):
        conf.pop("num_labels")
    if extra_config:
        conf.update(extra_config)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    if safetensors:
        from safetensors.torch import save_file
        save_file(sd, os.path.join(folder, "model.safetensors"))
    else:
        torch.save(sd, os.path.join(folder, "pytorch_model.bin"))


def init_weights(model, seed, std=0.02):
    """BERT-style initialisation (normal(0, std) weights, zero biases, unit LayerNorms), seeded."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model
