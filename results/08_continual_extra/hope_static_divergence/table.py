import json, glob, os
rows = []
def runs(pattern):
    for f in sorted(glob.glob(pattern)):
        r = [json.loads(l) for l in open(f)]
        yield f, r
print('run | logged steps | max state_norm_max (step) | max grad_norm.fast (step) | last logged step')
for pat in ['/tmp/c/08_continual/runs/hope_static/seed*/phase_a/metrics.jsonl',
            '/tmp/c/08_continual/runs/hope_outer/seed*/phase_a/metrics.jsonl',
            '/work/main/results/06_hope_titans/runs/hope_static/seed*/metrics.jsonl',
            '/work/main/results/06_hope_titans/runs/hope/seed*/metrics.jsonl',
            '/work/main/results/06_hope_titans/runs/hope_outer/seed*/metrics.jsonl',
            '/work/main/results/06_hope_titans/runs/hope_outer_adamw/seed*/metrics.jsonl',
            '/work/main/results/06_hope_titans/runs/hope_no_momentum/seed*/metrics.jsonl',
            '/work/main/results/06_hope_titans/runs/hope_outer_no_momentum/seed*/metrics.jsonl']:
    for f, r in runs(pat):
        sn = [(d.get('state_norm_max') or 0, d['step']) for d in r]
        g = [(d['grad_norm']['fast'], d['step']) for d in r]
        name = f.replace('/tmp/c/', '').replace('/work/main/results/', '').replace('/metrics.jsonl', '').replace('/runs', '')
        print(f"{name} | {len(r)} | {max(sn)[0]:.4g} ({max(sn)[1]}) | {max(g)[0]:.4g} ({max(g)[1]}) | {r[-1]['step']}")
