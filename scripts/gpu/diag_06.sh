#!/usr/bin/env bash
# Short stability/speed probe of the 06 models (150 steps each, in parallel on one GPU).
set -u
export PYTHONUNBUFFERED=1
S="--set data.seq_len=512 --set data.batch_size=16 --set steps=${STEPS:-150} --set log_every=25 --set eval_every=0 --set ckpt_every=0 --set warmup=50"
T4="--set model.d_model=256 --set model.n_layers=4 --set model.n_heads=4"
declare -A M
M[nested_lstm]="--set model.d_model=416 --set model.d_ff=1024"
M[transformer]="--set model.kind=transformer $T4 --set model.d_ff=1024"
M[titans]="--set model.kind=titans $T4 --set model.d_ff=768"
M[hope]="--set model.kind=hope $T4 --set model.d_ff=448"
for m in ${MODELS:-nested_lstm transformer titans hope}; do
  for lr in ${LRS:-2e-3 5e-3}; do
    ( python3 -m nlcore train --preset seed $S ${M[$m]} --set cms.levels.fast.lr=$lr $EXTRA --out /tmp/diag/$m-$lr --no-progress > /tmp/diag-$m-$lr.log 2>&1;
      echo "== $m lr=$lr rc=$?"; grep -o '"train_loss": [0-9.na]*' /tmp/diag/$m-$lr/metrics.jsonl | tr '\n' ' '; echo;
      python3 -c "import json;s=json.load(open('/tmp/diag/$m-$lr/summary.json'));print('valid',round(s['valid_bpc'],4),'chars/s',round(s['chars_per_s']))" 2>/dev/null || tail -3 /tmp/diag-$m-$lr.log ) &
  done
done
wait
