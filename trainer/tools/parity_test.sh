#!/usr/bin/env bash
# Runs //trainer/tools:parity on ../shared/fixtures/tiny-sd1 and checks that it
# passes every component, and that it fails on a broken model folder.
set -euo pipefail
: "${FIXTURES_DIR:?FIXTURES_DIR is not set: run through tests/run_all.sh}"
parity="$TEST_SRCDIR/$TEST_WORKSPACE/trainer/tools/parity"
out=$("$parity" --model_dir="$FIXTURES_DIR/tiny-sd1/model" \
      --reference_dir="$FIXTURES_DIR/tiny-sd1/reference" 2>&1)
echo "$out"
echo "$out" | grep -q "tokenizer (12 cases, 0 wrong)"
echo "$out" | grep -q "unet.output .*PASS"
echo "$out" | grep -q "vae.decoded .*PASS"
echo "$out" | grep -q "scheduler.euler_trajectory_end .*PASS"
echo "$out" | grep -q "pipeline.image .*PASS"
echo "$out" | grep -q "train_step.loss\[1\] .*PASS"
echo "$out" | grep -q "train_step.params .*PASS"
[ "$(echo "$out" | grep -c PASS)" -ge 10 ]
! echo "$out" | grep -q FAIL
# A model folder whose UNet weights disagree with its config must fail.
broken="$TEST_TMPDIR/broken"
cp -r "$FIXTURES_DIR/tiny-sd1/model" "$broken"
chmod -R u+w "$broken"
sed -i 's/"cross_attention_dim": 32/"cross_attention_dim": 48/' "$broken/unet/config.json"
if "$parity" --model_dir="$broken" --reference_dir="$FIXTURES_DIR/tiny-sd1/reference" > "$TEST_TMPDIR/b.log" 2>&1; then
  echo "parity passed on a broken model"; exit 1
fi
grep -q "attn2.to_k.weight" "$TEST_TMPDIR/b.log"
echo "parity_test: ok"
