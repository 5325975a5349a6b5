#!/usr/bin/env bash
# The main job end to end on a fresh machine (called by `make demo` with the venv on PATH):
# fetch the offline-available weights, synthesise a labelled corpus, build a store, learn two tags
# from 5 examples each, search, and evaluate every embedder x method on the corpus.
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
CLIPS=${DEMO_CLIPS:-400}
EMBEDDERS=${DEMO_EMBEDDERS:-musicnn}
EVAL_EMBEDDERS=${DEMO_EVAL_EMBEDDERS:-dsp,musicnn}
export TAGSTORE_STORE="$OUT/store"
step() { printf '\n== %s\n' "$*" >&2; }

step "weights: musicnn (from its PyPI wheel, verified)"
tagstore models list | grep -q '^musicnn .*present' || tagstore models fetch musicnn

step "corpus: $CLIPS synthesised, labelled clips in $OUT/corpus"
[ -f "$OUT/corpus/labels.csv" ] || tagstore demo-corpus "$OUT/corpus" --clips "$CLIPS" --seed 0

step "store: $TAGSTORE_STORE ($EMBEDDERS)"
[ -f "$TAGSTORE_STORE/catalogue.duckdb" ] || tagstore init --embedders "$EMBEDDERS"
tagstore add "$OUT/corpus/audio"
tagstore info

# Five training clips per tag, straight from the corpus labels.
examples() {
  awk -F, -v tag="$1" 'NR > 1 && $4 == "train" && (";" $3 ";") ~ (";" tag ";") { print ENVIRON["OUT"] "/corpus/" $1 }' \
    "$OUT/corpus/labels.csv" | head -n 5 | sed 's/^/--examples /'
}
export OUT
for tag in waltz trumpet; do
  step "learn '$tag' from 5 examples"
  # shellcheck disable=SC2046
  tagstore add-tag "$tag" $(examples "$tag")
  step "top 10 tracks for '$tag' besides its examples, checked against the corpus labels"
  tagstore scores "$tag" --top 10 --no-examples --csv | python "$(dirname "$0")/check_tag.py" "$tag" "$OUT/corpus/labels.csv"
done

QUERY=$(awk -F, 'NR == 2 { print ENVIRON["OUT"] "/corpus/" $1 }' "$OUT/corpus/labels.csv")
step "tracks most similar to $QUERY"
tagstore query similar "$QUERY" -k 5

step "evaluation: few-shot protocol over $EVAL_EMBEDDERS x probe, prototype, ensemble"
tagstore eval "$OUT/corpus/labels.csv" --embedders "$EVAL_EMBEDDERS" --shots 1,2,5,10,20 --draws "${DEMO_DRAWS:-3}" \
  --report "$OUT/report"
step "report: $OUT/report/index.html (data: $OUT/report/eval.json)"
