#!/usr/bin/env bash
# The single_file CLI on the fixture: a diffusers folder exported as one
# original-layout file and imported back (with the fixture as config folder)
# samples the same image as the original folder at fp32, and so does sample
# given the single file itself; a single file without its configs is
# refused with the reason.
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
# sample takes the single file itself, with the fixture for configs; the
# import lands in the cache once.
export XDG_CACHE_HOME="$OUT/cache"
"$SAMPLE" --model_dir="$OUT/model.safetensors" --model_config="$MODEL" --prompt="a red circle" --steps=3 \
  --seed=2 --width=32 --height=32 --out="$OUT/direct.png" 2> /dev/null
cmp "$OUT/model.png" "$OUT/direct.png" || { echo "the single file draws differently"; exit 1; }
[ "$(ls "$OUT/cache/distributed-diffusion/single-file" | wc -l)" = 1 ] || { echo "no cached import"; exit 1; }
if "$SAMPLE" --model_dir="$OUT/model.safetensors" --prompt=x --out="$OUT/y.png" 2> "$OUT/err2"; then
  echo "a single file without --model_config must fail"; exit 1
fi
grep -q "model_config" "$OUT/err2" || { cat "$OUT/err2"; exit 1; }
if "$BIN" --from="$OUT/model.safetensors" --to="$OUT/x" 2> "$OUT/err"; then
  echo "an import without --config_dir must fail"; exit 1
fi
grep -q "config_dir" "$OUT/err" || { cat "$OUT/err"; exit 1; }
echo PASS
