"""Carried-state growth of nlcore's SelfModifyingMemory (unchanged code, forward only) on real text,
as a function of its gates: the gate biases are set to logit(eta), logit(alpha), logit(beta) (the
gate weights keep their init, std 0.02, so gates vary per token by ~+-0.3 in logit), momentum on/off.
Input: u = LayerNorm(random embedding of WikiText-2 characters), 4 rows x 512, 6 windows carried."""
import math, json, sys, torch
from torch import nn
from nlcore.models.memory_layers import SelfModifyingMemory
torch.manual_seed(0)
text = open('/work/main/.data/wikitext-2/train.txt', encoding='utf-8').read()
chars = sorted(set(text)); idx = {c: i for i, c in enumerate(chars)}
B, T, W, d, H = 4, 512, 6, 256, 4
rowlen = T * W
ids = torch.tensor([[idx[c] for c in text[r * 200000: r * 200000 + rowlen]] for r in range(B)])
emb = nn.Embedding(len(chars), d); ln = nn.LayerNorm(d)
with torch.no_grad():
    U = ln(emb(ids))  # (B, rowlen, d)
logit = lambda p: math.log(p / (1 - p))
def run(eta, alpha, beta, momentum, seed=0):
    torch.manual_seed(seed)
    m = SelfModifyingMemory(d, H, chunk=64, momentum=momentum)
    with torch.no_grad():
        m.gates.bias.copy_(torch.tensor([logit(eta), logit(alpha), logit(beta)]).repeat_interleave(H))
        st = {k: torch.zeros(B, *s) for k, s in m.state_shapes().items()}
        norms = []
        for w in range(W):
            y, st = m(U[:, w * T:(w + 1) * T], st, None)
            n = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in st.values())).max()
            norms.append(float(n))
    return norms
res = []
for momentum in (True, False):
    for alpha in (0.982, 0.99, 0.995, 0.999):
        for beta in ((0.5, 0.7, 0.8, 0.9) if momentum else (0.5,)):
            for eta in (0.5, 0.7, 0.9):
                n = run(eta, alpha, beta, momentum)
                r = {'momentum': momentum, 'eta': eta, 'alpha': alpha, 'beta': beta if momentum else None,
                     'state_norm_after_window_1_3_6': [float('%.4g' % x) for x in (n[0], n[2], n[-1])], 'max': float('%.4g' % max(n))}
                res.append(r); print(json.dumps(r), flush=True)
json.dump(res, open('/tmp/hs/memgrid.json', 'w'), indent=0)
