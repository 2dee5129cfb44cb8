"""Check scopectl's LoRA conversions against the real Python stack (safetensors, torch, peft).

For every (source, converted) pair listed in pairs.txt this script:
  1. loads both files with safetensors.torch (the reference reader);
  2. maps keys of either family to Wan module names with its own, independent key table;
  3. computes B @ A * alpha/rank for every module from both files, on the GPU in float64,
     and requires them to be equal (exactly, for lossless conversions);
  4. for diffusers outputs, builds a module tree with diffusers' Wan names, creates a PEFT
     LoraConfig from the file's lora_adapter_metadata, loads the state dict with
     peft.set_peft_model_state_dict and compares PEFT's own get_delta_weight();
  5. for Scope installs, re-implements Scope's normalize_lora_key/standardize_lora_for_peft
     (wan2_1/lora/utils.py) and checks the delta Scope would merge.
"""
import json
import re
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

DEV = "cuda" if torch.cuda.is_available() else "cpu"

BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0",
    "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}
DIFF2WAN = {v: k for k, v in BLOCK.items()}
KOHYA2WAN = {k.replace(".", "_"): k for k in BLOCK}


def wan_module(key):
    """-> (wan module, part) or None. part in A, B, alpha."""
    for suf, part in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_down.weight", "A"),
                      (".lora_up.weight", "B"), (".alpha", "alpha")):
        if key.endswith(suf):
            base = key[: -len(suf)]
            break
    else:
        return None
    if base.startswith("lora_unet_"):
        m = re.match(r"blocks_(\d+)_(.+)$", base[len("lora_unet_"):])
        return (f"blocks.{m.group(1)}.{KOHYA2WAN[m.group(2)]}", part)
    if base.startswith("transformer."):
        m = re.match(r"blocks\.(\d+)\.(.+)$", base[len("transformer."):])
        return (f"blocks.{m.group(1)}.{DIFF2WAN[m.group(2)]}", part)
    if base.startswith("diffusion_model."):
        base = base[len("diffusion_model."):]
    return (base, part)


def adapter_alpha(meta):
    raw = (meta or {}).get("lora_adapter_metadata")
    if not raw:
        return None, {}
    cfg = json.loads(raw)
    get = lambda k: cfg.get("transformer." + k, cfg.get(k))
    return get("lora_alpha"), get("alpha_pattern") or {}


def deltas(path, honour_alpha=True):
    sd = load_file(path, device=DEV)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    mods = {}
    for k, t in sd.items():
        wm = wan_module(k)
        if wm is None:
            continue
        mods.setdefault(wm[0], {})[wm[1]] = t
    alpha_default, pattern = adapter_alpha(meta)
    out = {}
    for name, parts in mods.items():
        a, b = parts["A"].double(), parts["B"].double()
        rank = a.shape[0]
        alpha = rank
        if "alpha" in parts and honour_alpha:
            alpha = parts["alpha"].double().item()
        elif "alpha" not in parts:
            m = re.match(r"blocks\.(\d+)\.(.+)$", name)
            dn = f"blocks.{m.group(1)}.{BLOCK[m.group(2)]}"
            if dn in pattern:
                alpha = pattern[dn]
            elif alpha_default is not None:
                alpha = alpha_default
        out[name] = (lambda a=a, b=b, rank=rank, alpha=alpha: (b @ a.reshape(rank, -1)) * (alpha / rank))
    return out, sd, meta


# --- Scope's loader, re-implemented from src/scope/core/pipelines/wan2_1/lora/utils.py ---
def scope_normalize(k):
    if k.startswith("lora_unet_"):
        k = k[len("lora_unet_"):]
        k = k.replace("cross_attn", "<<C>>").replace("self_attn", "<<S>>")
        k = re.sub(r"_(\d+)_", r".\1.", k).replace("_", ".")
        return k.replace("<<C>>", "cross_attn").replace("<<S>>", "self_attn")
    if k.startswith("diffusion_model."):
        return k[len("diffusion_model."):]
    return k


def scope_deltas(path):
    sd = load_file(path, device=DEV)
    keys = list(sd)
    updown = any(".lora_up.weight" in k or ".lora_down.weight" in k for k in keys)
    unet = any(k.startswith("lora_unet_") for k in keys)
    peft = any(".lora_A.weight" in k or ".lora_B.weight" in k for k in keys)
    dm = any(k.startswith("diffusion_model.") for k in keys)
    convert = updown or unet or (not dm and peft)
    out = {}
    for k in keys:
        if k.endswith(".lora_B.weight"):
            base, ak = k[: -len(".lora_B.weight")], k[: -len(".lora_B.weight")] + ".lora_A.weight"
        elif k.endswith(".lora_up.weight"):
            base, ak = k[: -len(".lora_up.weight")], k[: -len(".lora_up.weight")] + ".lora_down.weight"
        else:
            continue
        a, b = sd[ak], sd[k]
        if convert:
            alpha = sd[base + ".alpha"].item() if base + ".alpha" in sd else None
            scale = alpha / a.shape[0] if alpha is not None else 1.0
            b = b * scale  # Scope scales in the tensor's own dtype
        name = scope_normalize(base)
        if name.startswith("transformer."):
            continue  # diffusers keys: Scope matches nothing
        out[name] = (lambda a=a, b=b: b.double() @ a.double().reshape(a.shape[0], -1))
    return out


def peft_deltas(path):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    sd = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    cfg = json.loads((meta or {}).get("lora_adapter_metadata", "{}"))
    cfg = {k[len("transformer."):]: v for k, v in cfg.items() if k.startswith("transformer.")}
    shapes = {}
    for k, t in sd.items():
        if k.endswith(".lora_A.weight"):
            shapes.setdefault(k[len("transformer."): -len(".lora_A.weight")], [None, None])[0] = t.shape[1]
        if k.endswith(".lora_B.weight"):
            shapes.setdefault(k[len("transformer."): -len(".lora_B.weight")], [None, None])[1] = t.shape[0]
    if not cfg:  # no metadata: diffusers then loads with lora_alpha = r (scale 1)
        r = next(t.shape[0] for k, t in sd.items() if k.endswith(".lora_A.weight"))
        cfg = {"r": r, "lora_alpha": r, "target_modules": sorted(shapes)}
    params = sum(fin * fout for fin, fout in shapes.values())
    if params > 3e9:  # a whole 14B transformer's linears: too big to build just for this
        return None
    root = torch.nn.Module()
    for name, (fin, fout) in shapes.items():
        parent = root
        parts = name.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, torch.nn.Module())
            parent = getattr(parent, p)
        parent.add_module(parts[-1], torch.nn.Linear(fin, fout, bias=False, device=DEV))
    config = LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"], target_modules=cfg["target_modules"],
                        rank_pattern=cfg.get("rank_pattern") or {}, alpha_pattern=cfg.get("alpha_pattern") or {})
    model = get_peft_model(root, config).to(DEV)
    state = {"base_model.model." + k[len("transformer."):]: v for k, v in sd.items()}
    res = set_peft_model_state_dict(model, state)
    unexpected = [k for k in res.unexpected_keys if "lora" in k]
    assert not unexpected, f"peft rejected keys: {unexpected[:3]}"
    out = {}
    for name in shapes:
        layer = model.base_model.model.get_submodule(name)
        m = re.match(r"blocks\.(\d+)\.(.+)$", name)
        out[f"blocks.{m.group(1)}.{DIFF2WAN[m.group(2)]}"] = (lambda layer=layer: layer.get_delta_weight("default").double())
    return out


def compare(tag, ref, got, tol=0.0):
    assert set(ref) == set(got), f"{tag}: modules differ: {sorted(set(ref) ^ set(got))[:4]}"
    worst = 0.0
    for k in ref:  # one module at a time: a 14B LoRA's deltas do not fit in memory at once
        r, g = ref[k](), got[k]()
        d = (r - g).abs().max().item()
        scale = r.abs().max().item() or 1.0
        worst = max(worst, d / scale)
        del r, g
    ok = worst <= tol
    print(f"{'OK  ' if ok else 'FAIL'} {tag}: {len(ref)} modules, max relative difference {worst:.3g}")
    return ok


def kind_tol(src):
    return 0.0 if "pow2" in src else 2.0 ** -8


def main():
    ok = True
    for line in open(sys.argv[1]):
        kind, src, out = line.split()
        ref, _, _ = deltas(src)
        if kind == "convert":
            got, _, _ = deltas(out)
            ok &= compare(f"convert {src} -> {out}", ref, got)
        elif kind == "fold":
            got, _, _ = deltas(out)
            ok &= compare(f"fold {src} -> {out}", ref, got, tol=1e-6)
        elif kind == "peft":
            got = peft_deltas(out)
            if got is None:
                print(f"SKIP peft {out}: base model too large to instantiate (tensor checks above cover it)")
            else:
                ok &= compare(f"peft {out}", ref, got, tol=1e-6)
        elif kind == "scope":
            # Scope multiplies B by alpha/rank in B's dtype (bf16): exact for power-of-two
            # scales, else within bf16 rounding (2^-8), which is Scope's own arithmetic.
            ok &= compare(f"scope {src} -> {out}", ref, scope_deltas(out), tol=float(kind_tol(src)))
    print("torch", torch.__version__, "device", DEV, torch.cuda.get_device_name(0) if DEV == "cuda" else "")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
