#!/usr/bin/env bash
# The single_file CLI on the fixture: a diffusers folder exported as one
# original-layout file and imported back (with the fixture as config folder)
# samples the same image as the original folder at fp32; a single file
# without --config_dir is refused with the reason.
set -euo pipefail
BIN="$TEST_SRCDIR/$TEST_WORKSPACE/trainer/tools/single_file"
SAMPLE="$TEST_SRCDIR/$TEST_WORKSPACE/trainer/sample"
MODEL="${FIXTURES_DIR:?run through tests/run_all.sh}/tiny-sd1/model"
OUT="$TEST_TMPDIR"
"$BIN" --from="$MODEL" --to="$OUT/model.safetensors" --dtype=fp32 | grep -q "SD 1.x single file"
"$BIN" --from="$OUT/model.safetensors" --config_dir="$MODEL" --to="$OUT/imported" | grep -q "imported"
for dir in "$MODEL" "$OUT/imported"; do
  "$SAMPLE" --model_dir="$dir" --prompt="a red circle" --steps=3 --seed=2 --width=32 --height=32 \
    --out="$OUT/$(basename "$dir").png" 2> /dev/null
done
cmp "$OUT/model.png" "$OUT/imported.png" || { echo "the imported model draws differently"; exit 1; }
if "$BIN" --from="$OUT/model.safetensors" --to="$OUT/x" 2> "$OUT/err"; then
  echo "an import without --config_dir must fail"; exit 1
fi
grep -q "config_dir" "$OUT/err" || { cat "$OUT/err"; exit 1; }
echo PASS
