"""Phase A of 08_continual (joint WikiText-2 + Tiny Shakespeare vocabulary) with gate and state probes.
Usage: probe.py OUT EVERY [--set k=v ...]   (reads /tmp/hs/base_args.txt for the registry's overrides)
Writes OUT/phase_a/metrics.jsonl (trainer) and OUT/probe.jsonl (this script)."""
import json, sys, time, math
from pathlib import Path
import torch
from nlcore.config import apply_overrides, preset
from nlcore.data import joint_tokenizer
from nlcore.training.continual import phase_b_config
from nlcore.training.trainer import Trainer, load_data

out, every = Path(sys.argv[1]), int(sys.argv[2])
base = open('/tmp/hs/base_args.txt').read().split()
sets = [base[i + 1] for i, a in enumerate(base) if a == '--set']
extra = [a for a in sys.argv[3:] if a != '--set']
cfg_a = apply_overrides(preset('seed'), sets + extra).validate()
cfg_b = phase_b_config(cfg_a, 'tinyshakespeare', 500)
tok = joint_tokenizer([load_data(cfg_a), load_data(cfg_b)])
out.mkdir(parents=True, exist_ok=True)
probe_f = open(out / 'probe.jsonl', 'w')
rec = {'on': False, 'gates': {}}

def hook_for(i):
    def hook(mod, inp, o):
        if not rec['on']:
            return
        H = o.shape[-1] // 3
        g = torch.sigmoid(o.detach().float())
        eta, alpha, beta = g[..., :H], g[..., H:2 * H], g[..., 2 * H:]
        d = {}
        for n, x in (('eta', eta), ('alpha', alpha), ('beta', beta)):
            d[n] = [round(float(x.mean()), 4), round(float(x.quantile(0.99) if x.numel() < 2**24 else x.max()), 4), round(float(x.max()), 5)]
        d['frac_a>0.99&b>0.8'] = float(((alpha > 0.99) & (beta > 0.8)).float().mean())
        d['frac_b>0.9'] = float((beta > 0.9).float().mean())
        d['frac_a>0.995'] = float((alpha > 0.995).float().mean())
        d['w_norm'] = [round(float(mod.weight[k*H:(k+1)*H].norm()), 3) for k in range(3)]
        d['bias_mean'] = [round(float(mod.bias[k*H:(k+1)*H].mean()), 3) for k in range(3)]
        rec['gates'][i] = d
    return hook

def after(tr):
    s = tr.step
    if rec['on']:
        st = tr.carrier.state
        norms = {}
        for k, v in st.items():
            v = v.detach().float()
            if v.dim() == 4 and v.shape[1] % 3 == 0:  # (B, 3H, dh, dh): [mem | k | v]
                B, H3 = v.shape[:2]
                parts = v.view(B, 3, H3 // 3, *v.shape[2:])
                norms[k] = [round(float(parts[:, j].flatten(1).norm(dim=1).max()), 3) for j in range(3)]
        h = tr.history[-1] if tr.history else {}
        probe_f.write(json.dumps({'step': s, 'loss': h.get('train_loss') if h.get('step') == s else None,
                                  'grad_fast': h.get('grad_norm', {}).get('fast') if h.get('step') == s else None,
                                  'state_max_by_part[mem,k,v]': norms, 'gates': rec['gates'], 't': time.time()}) + '\n')
        probe_f.flush()
        rec['gates'] = {}
    rec['on'] = (s + 1) % every == 0 or s + 1 <= 3

tr = Trainer(cfg_a, out / 'phase_a', command='probe ' + ' '.join(sys.argv[1:]), progress=False, tokenizer=tok, after_step=after)
for i, m in enumerate(tr.model.mems):
    m.gates.register_forward_hook(hook_for(i))
rec['on'] = True
print('vocab', tr.vocab_size, 'compile', tr.compile, 'threads', torch.get_num_threads(), flush=True)
tr.run(overwrite=True)
